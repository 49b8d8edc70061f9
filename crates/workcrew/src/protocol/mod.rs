//! The wire protocol between a process pool and its workers.
//!
//! `docs/protocol.md` is the normative specification; this module implements
//! it: [`FrameCodec`] cuts the channel into length-prefixed [`Frame`]s and
//! enforces the maximum frame size both ways, [`Message`] gives each frame its
//! meaning, and [`Encoding`] encodes call arguments and results (JSON for any
//! language, postcard between Rust programs).
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
//! The process pool that uses it is not built yet (see the README).

mod encoding;
mod frame;
mod message;

pub use encoding::{Encoding, PayloadError};
pub use frame::{Frame, FrameCodec, FrameError, FrameType, DEFAULT_MAX_FRAME, HEADER_LEN};
pub use message::{ErrorBody, ErrorKind, Hello, Message, MessageError, Welcome, PROTOCOL_VERSION};
