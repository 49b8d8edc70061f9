//! The wire protocol between a process pool and its workers.
//!
//! `docs/protocol.md` is the normative specification; this module implements
//! it: [`FrameCodec`] cuts the channel into length-prefixed [`Frame`]s and
//! enforces the maximum frame size both ways, [`Message`] gives each frame its
//! meaning, and [`Encoding`] encodes call arguments and results (JSON for any
//! language, postcard between Rust programs). On Unix, [`send_with_fds`] passes
//! file descriptors with a `CALL_FDS` frame.
//!
//! ```
//! use bytes::BytesMut;
//! use tokio_util::codec::{Decoder, Encoder};
//! use workcrew::protocol::{Encoding, FrameCodec, Message};
//!
//! let mut codec = FrameCodec::default();
//! let call = Message::Call { id: 1, function: "echo".into(), payload: Encoding::Json.encode("hi").unwrap() };
//! let mut wire = BytesMut::new();
//! codec.encode(call.to_frame(), &mut wire).unwrap();
//! let frame = codec.decode(&mut wire).unwrap().unwrap();
//! assert_eq!(Message::from_frame(frame).unwrap(), call);
//! ```
//!

mod encoding;
pub(crate) mod fds;
mod frame;
mod message;
pub(crate) mod socket;

pub use encoding::{Encoding, PayloadError};
pub use fds::send_with_fds;
pub use frame::{
    Frame, FrameCodec, FrameError, FrameType, DEFAULT_MAX_FRAME, HEADER_LEN, MIN_MAX_FRAME,
};
pub use message::{
    ErrorBody, ErrorKind, Hello, Message, MessageError, Welcome, MAX_FDS, PROTOCOL_VERSION,
};

pub(crate) use frame::{peek_frame, put_header, FrameRef, Peek};
pub(crate) use message::{parse_call, parse_call_fds, put_call_frame};
