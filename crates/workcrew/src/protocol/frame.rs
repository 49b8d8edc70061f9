//! Frames: the length-prefixed units on the worker channel (`docs/protocol.md`, section 2).

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Bytes before the body: `length` (4), `type` (1), `id` (8).
pub const HEADER_LEN: usize = 13;

/// The default maximum frame size: 16 MiB, counted as the `length` field counts.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// The smallest maximum frame size a pool may announce: 4 KiB, room for any `HELLO`-sized
/// control message and every error a worker must be able to send.
pub const MIN_MAX_FRAME: usize = 4096;

/// The message types of protocol version 1.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// Worker → pool: announces version, functions, concurrency.
    Hello = 1,
    /// Pool → worker: the negotiated settings.
    Welcome = 2,
    /// Pool → worker: run a function.
    Call = 3,
    /// Worker → pool: a call's value.
    Result = 4,
    /// Worker → pool: a call's error.
    Error = 5,
    /// Pool → worker: stop a call.
    Cancel = 6,
    /// Pool → worker: are you alive?
    Ping = 7,
    /// Worker → pool: yes.
    Pong = 8,
    /// Pool → worker: finish and exit.
    Shutdown = 9,
    /// Pool → worker: run a function on each item of a chunk.
    CallMany = 10,
    /// Pool → worker: run a function, passing it file descriptors.
    CallFds = 11,
}

impl FrameType {
    fn from_u8(b: u8) -> Option<Self> {
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
}

/// One frame: its type, id and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// What the frame is.
    pub kind: FrameType,
    /// Call id, ping nonce, or 0.
    pub id: u64,
    /// Everything after the id.
    pub body: Bytes,
}

/// A frame seen in place in a receive buffer, its body borrowed from it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FrameRef<'a> {
    pub(crate) kind: FrameType,
    pub(crate) id: u64,
    pub(crate) body: &'a [u8],
}

impl FrameRef<'_> {
    /// Bytes the frame takes on the wire, header included.
    pub(crate) fn wire_len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }

    /// An owned copy, for the rare paths that want a [`Frame`].
    pub(crate) fn to_frame(self) -> Frame {
        Frame {
            kind: self.kind,
            id: self.id,
            body: Bytes::copy_from_slice(self.body),
        }
    }
}

/// What the front of a receive buffer holds.
#[derive(Debug)]
pub(crate) enum Peek<'a> {
    /// A complete frame.
    Frame(FrameRef<'a>),
    /// Not a whole frame yet: the frame needs `needed` bytes in all (the 4 bytes of `length`
    /// while that is incomplete).
    Partial { needed: usize },
}

/// Looks at the front of `src` without consuming it: the one place where a frame's header is
/// checked, shared by [`FrameCodec`] and the worker's serving loop.
///
/// # Errors
///
/// [`FrameError`] as soon as `length` is out of bounds (before the body is read), or for an
/// unknown type once the frame is complete.
pub(crate) fn peek_frame(src: &[u8], max_frame: usize) -> Result<Peek<'_>, FrameError> {
    let Some(head) = src.first_chunk::<4>() else {
        return Ok(Peek::Partial { needed: 4 });
    };
    let length = u32::from_be_bytes(*head) as usize;
    if length > max_frame {
        return Err(FrameError::TooLarge {
            length,
            max: max_frame,
        });
    }
    if length < HEADER_LEN - 4 {
        return Err(FrameError::TooShort(length));
    }
    let Some(frame) = src.get(..4 + length) else {
        return Ok(Peek::Partial { needed: 4 + length });
    };
    let kind = FrameType::from_u8(frame[4]).ok_or(FrameError::UnknownType(frame[4]))?;
    let mut id = [0; 8];
    id.copy_from_slice(&frame[5..HEADER_LEN]);
    Ok(Peek::Frame(FrameRef {
        kind,
        id: u64::from_be_bytes(id),
        body: &frame[HEADER_LEN..],
    }))
}

/// Appends a frame header for a body of `body_len` bytes to `dst`.
pub(crate) fn put_header(dst: &mut impl BufMut, kind: FrameType, id: u64, body_len: usize) {
    // Callers check the maximum frame size, far below `u32::MAX`.
    dst.put_u32((HEADER_LEN - 4 + body_len) as u32);
    dst.put_u8(kind as u8);
    dst.put_u64(id);
}

/// The channel carried something that is not a valid frame; the channel is
/// broken and must be closed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// `length` is above the maximum frame size.
    #[error("frame of {length} bytes exceeds the maximum frame size of {max} bytes")]
    TooLarge {
        /// The announced length.
        length: usize,
        /// The limit in force.
        max: usize,
    },
    /// `length` is below the 9 bytes of type and id.
    #[error("frame length {0} is shorter than its 9-byte type and id")]
    TooShort(usize),
    /// `type` is not a known message type.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// Reading or writing the channel failed.
    #[error("channel i/o failed")]
    Io(#[from] std::io::Error),
}

/// Encodes and decodes [`Frame`]s, enforcing the maximum frame size both ways.
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use tokio_util::codec::Decoder;
/// use workcrew::protocol::{FrameCodec, FrameType};
///
/// let wire = [0, 0, 0, 0x13, 3, 0, 0, 0, 0, 0, 0, 0, 7, 0, 4, b'e', b'c', b'h', b'o', b'"', b'h', b'i', b'"'];
/// let mut buf = BytesMut::from(&wire[..]);
/// let frame = FrameCodec::default().decode(&mut buf).unwrap().unwrap();
/// assert_eq!((frame.kind, frame.id), (FrameType::Call, 7));
/// assert_eq!(&frame.body[..], b"\x00\x04echo\"hi\"");
/// ```
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    max_frame: usize,
}

impl FrameCodec {
    /// A codec with the given maximum frame size (as the `length` field counts).
    pub fn new(max_frame: usize) -> Self {
        FrameCodec { max_frame }
    }

    /// The maximum frame size in force.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let (kind, id, wire_len) = match peek_frame(src, self.max_frame)? {
            Peek::Partial { needed } => {
                // Reserve once for the whole frame rather than growing piecemeal.
                src.reserve(needed - src.len());
                return Ok(None);
            }
            Peek::Frame(f) => (f.kind, f.id, f.wire_len()),
        };
        src.advance(HEADER_LEN);
        let body = src.split_to(wire_len - HEADER_LEN).freeze();
        Ok(Some(Frame { kind, id, body }))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let length = 9 + frame.body.len();
        if length > self.max_frame {
            return Err(FrameError::TooLarge {
                length,
                max: self.max_frame,
            });
        }
        dst.reserve(4 + length);
        dst.put_u32(length as u32);
        dst.put_u8(frame.kind as u8);
        dst.put_u64(frame.id);
        dst.extend_from_slice(&frame.body);
        Ok(())
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(kind: FrameType, id: u64, body: &[u8]) -> Frame {
        Frame {
            kind,
            id,
            body: Bytes::copy_from_slice(body),
        }
    }

    #[test]
    fn round_trip_and_partial_input() {
        let mut codec = FrameCodec::default();
        let mut wire = BytesMut::new();
        codec
            .encode(frame(FrameType::Call, 7, b"\x00\x04echo\"hi\""), &mut wire)
            .unwrap();
        codec
            .encode(frame(FrameType::Ping, 9, b""), &mut wire)
            .unwrap();
        let bytes = wire.freeze();
        // Fed one byte at a time, the decoder yields exactly the two frames.
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in bytes.iter() {
            buf.put_u8(*b);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        assert_eq!(
            out,
            [
                frame(FrameType::Call, 7, b"\x00\x04echo\"hi\""),
                frame(FrameType::Ping, 9, b"")
            ]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn oversize_frames_are_refused_before_reading_the_body() {
        let mut codec = FrameCodec::new(64);
        let mut buf = BytesMut::from(&[0u8, 0, 1, 0][..]); // length 256, no body yet
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge {
                length: 256,
                max: 64
            })
        ));
        let mut out = BytesMut::new();
        let err = codec
            .encode(frame(FrameType::Result, 1, &[0; 100]), &mut out)
            .unwrap_err();
        assert!(matches!(
            err,
            FrameError::TooLarge {
                length: 109,
                max: 64
            }
        ));
        assert!(out.is_empty(), "nothing written for a refused frame");
    }

    #[test]
    fn garbage_is_an_error_not_a_hang() {
        let mut codec = FrameCodec::default();
        let mut short = BytesMut::from(&[0u8, 0, 0, 3, 1, 2, 3][..]);
        assert!(matches!(
            codec.decode(&mut short),
            Err(FrameError::TooShort(3))
        ));
        let mut unknown = BytesMut::from(&[0u8, 0, 0, 9, 42, 0, 0, 0, 0, 0, 0, 0, 1][..]);
        assert!(matches!(
            codec.decode(&mut unknown),
            Err(FrameError::UnknownType(42))
        ));
        // Printable text (a worker printing on the channel) is refused at once too.
        let mut text = BytesMut::from(&b"hello world\n"[..]);
        assert!(codec.decode(&mut text).is_err());
    }

    proptest! {
        /// Arbitrary bytes never panic the decoder, and whatever it accepts re-encodes to the
        /// same bytes.
        #[test]
        fn decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut codec = FrameCodec::new(128);
            let mut buf = BytesMut::from(&data[..]);
            let mut consumed = 0;
            while let Ok(Some(f)) = codec.decode(&mut buf) {
                let mut again = BytesMut::new();
                codec.encode(f, &mut again).unwrap();
                prop_assert_eq!(&again[..], &data[consumed..consumed + again.len()]);
                consumed += again.len();
            }
        }

        #[test]
        fn any_frame_round_trips(kind in 1u8..=11, id in any::<u64>(), body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut codec = FrameCodec::default();
            let f = frame(FrameType::from_u8(kind).unwrap(), id, &body);
            let mut buf = BytesMut::new();
            codec.encode(f.clone(), &mut buf).unwrap();
            prop_assert_eq!(codec.decode(&mut buf).unwrap(), Some(f));
            prop_assert!(buf.is_empty());
        }
    }
}
