//! Messages: the meaning of each frame (`docs/protocol.md`, section 3).

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::encoding::Encoding;
use super::frame::{put_header, Frame, FrameType, DEFAULT_MAX_FRAME};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The most file descriptors one `CALL_FDS` may carry.
pub const MAX_FDS: usize = 16;

/// A worker's announcement (`HELLO`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The highest protocol version the worker speaks.
    pub protocol: u32,
    /// The functions it serves.
    pub functions: Vec<String>,
    /// Calls it runs at once. Default: 1.
    #[serde(default = "one")]
    pub concurrency: u32,
    /// Payload encodings it accepts, preferred first. Default: `["json"]`.
    #[serde(default = "json_only")]
    pub encodings: Vec<Encoding>,
    /// Its process id, for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// It accepts `CALL_MANY` (a chunk of calls in one frame). Default: false.
    #[serde(default)]
    pub batch: bool,
    /// It reads the channel with `recvmsg` and accepts `CALL_FDS` (file descriptors passed
    /// with a call). Default: false.
    #[serde(default)]
    pub fds: bool,
}

fn one() -> u32 {
    1
}

fn json_only() -> Vec<Encoding> {
    vec![Encoding::Json]
}

/// The pool's answer to `HELLO` (`WELCOME`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The version both sides speak.
    pub protocol: u32,
    /// The payload encoding for calls and results.
    pub encoding: Encoding,
    /// The maximum frame size in force, both ways.
    pub max_frame: usize,
    /// How often the pool pings, in milliseconds (0 = never).
    pub heartbeat_ms: u64,
}

impl Welcome {
    /// The pool's answer to `hello`: the lower version, the worker's most
    /// preferred encoding among `offered`, and the given limits. `None` if no
    /// encoding is shared or the worker speaks no version this crate knows.
    pub fn negotiate(
        hello: &Hello,
        offered: &[Encoding],
        max_frame: usize,
        heartbeat_ms: u64,
    ) -> Option<Welcome> {
        if hello.protocol == 0 {
            return None;
        }
        let encoding = *hello.encodings.iter().find(|e| offered.contains(e))?;
        Some(Welcome {
            protocol: hello.protocol.min(PROTOCOL_VERSION),
            encoding,
            max_frame,
            heartbeat_ms,
        })
    }
}

impl Default for Welcome {
    fn default() -> Self {
        Welcome {
            protocol: PROTOCOL_VERSION,
            encoding: Encoding::Json,
            max_frame: DEFAULT_MAX_FRAME,
            heartbeat_ms: 5000,
        }
    }
}

/// What kind of error a worker reports (`ERROR.kind`).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The function returned an error of its own.
    Failed,
    /// The function crashed; the worker is fine.
    Panicked,
    /// No such function.
    UnknownFunction,
    /// The arguments could not be decoded.
    BadArgs,
    /// Stopped after a `CANCEL`.
    Cancelled,
    /// The result would exceed the maximum frame size.
    TooLarge,
    /// Anything else, including kinds this version does not know.
    #[serde(other)]
    Internal,
}

/// The body of an `ERROR` frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub kind: ErrorKind,
    /// One human-readable line.
    pub message: String,
    /// Details for the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

/// One protocol message.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// `HELLO`.
    Hello(Hello),
    /// `WELCOME`.
    Welcome(Welcome),
    /// `CALL`: run `function` on `payload`.
    Call {
        /// The call id.
        id: u64,
        /// The function's name.
        function: String,
        /// The encoded argument.
        payload: Bytes,
    },
    /// `CALL_MANY`: run `function` on each item of a chunk, answered by one `RESULT` holding
    /// the sequence of results, or one `ERROR` naming the first failing item.
    CallMany {
        /// The call id (one for the whole chunk).
        id: u64,
        /// The function's name.
        function: String,
        /// The encoded sequence of arguments.
        payload: Bytes,
    },
    /// `CALL_FDS`: run `function` on `payload` with `descriptors` file descriptors, which
    /// travel beside the frame as `SCM_RIGHTS` ancillary data, not in it.
    CallFds {
        /// The call id.
        id: u64,
        /// How many descriptors come with the call: 1 to [`MAX_FDS`].
        descriptors: u8,
        /// The function's name.
        function: String,
        /// The encoded argument.
        payload: Bytes,
    },
    /// `RESULT`: call `id` returned `payload`.
    Result {
        /// The call id.
        id: u64,
        /// The encoded value.
        payload: Bytes,
    },
    /// `ERROR`: call `id` failed.
    Error {
        /// The call id.
        id: u64,
        /// What went wrong.
        error: ErrorBody,
    },
    /// `CANCEL` call `id`.
    Cancel {
        /// The call id.
        id: u64,
    },
    /// `PING` with a nonce.
    Ping {
        /// Echoed by the `PONG`.
        nonce: u64,
    },
    /// `PONG` answering a `PING`.
    Pong {
        /// The `PING`'s nonce.
        nonce: u64,
    },
    /// `SHUTDOWN`.
    Shutdown,
}

/// A frame that is well-formed but does not hold a valid message.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// A JSON body (`HELLO`, `WELCOME`, `ERROR`) did not parse.
    #[error("malformed {kind} body")]
    Json {
        /// The frame type.
        kind: FrameType,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A `CALL`, `CALL_MANY` or `CALL_FDS` body is shorter than its name length says, or the
    /// name is not UTF-8.
    #[error("malformed call body for call {0}")]
    BadCall(u64),
    /// A `CALL_FDS` announces no descriptors or more than [`MAX_FDS`].
    #[error("call {id} announces {count} file descriptors, outside 1..={MAX_FDS}")]
    BadDescriptorCount {
        /// The call id.
        id: u64,
        /// The announced count.
        count: u8,
    },
}

/// Splits a `CALL` or `CALL_MANY` body into the function's name and the payload, in place.
pub(crate) fn parse_call(id: u64, body: &[u8]) -> Result<(&str, &[u8]), MessageError> {
    let (len, rest) = body
        .split_first_chunk::<2>()
        .ok_or(MessageError::BadCall(id))?;
    let len = u16::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err(MessageError::BadCall(id));
    }
    let (name, payload) = rest.split_at(len);
    let name = std::str::from_utf8(name).map_err(|_| MessageError::BadCall(id))?;
    Ok((name, payload))
}

/// Splits a `CALL_FDS` body into the descriptor count, the function's name and the payload.
pub(crate) fn parse_call_fds(id: u64, body: &[u8]) -> Result<(u8, &str, &[u8]), MessageError> {
    let (&count, rest) = body.split_first().ok_or(MessageError::BadCall(id))?;
    if count == 0 || usize::from(count) > MAX_FDS {
        return Err(MessageError::BadDescriptorCount { id, count });
    }
    let (name, payload) = parse_call(id, rest)?;
    Ok((count, name, payload))
}

/// Appends a call body (`u16` name length, name, payload) to `b`.
fn put_call(b: &mut impl BufMut, function: &str, payload: &[u8]) {
    let name = call_name(function);
    b.put_u16(name.len() as u16);
    b.put_slice(name);
    b.put_slice(payload);
}

/// A function's name as a `CALL` body carries it. Names are short; a longer
/// one is cut at the length field's limit and so refused by the worker as an
/// unknown function.
fn call_name(function: &str) -> &[u8] {
    let name = function.as_bytes();
    &name[..name.len().min(u16::MAX as usize)]
}

/// Appends a whole `CALL` or `CALL_MANY` frame (`kind`) to `dst`: the pool's
/// hot path, with no intermediate body.
pub(crate) fn put_call_frame(
    dst: &mut impl BufMut,
    kind: FrameType,
    id: u64,
    function: &str,
    payload: &[u8],
) {
    put_header(dst, kind, id, 2 + call_name(function).len() + payload.len());
    put_call(dst, function, payload);
}

impl Message {
    /// The frame carrying this message.
    pub fn to_frame(&self) -> Frame {
        let json = |v: &dyn erased::Json| Bytes::from(v.to_vec());
        let (kind, id, body) = match self {
            Message::Hello(h) => (FrameType::Hello, 0, json(h)),
            Message::Welcome(w) => (FrameType::Welcome, 0, json(w)),
            Message::Call {
                id,
                function,
                payload,
            }
            | Message::CallMany {
                id,
                function,
                payload,
            } => {
                let kind = match self {
                    Message::Call { .. } => FrameType::Call,
                    _ => FrameType::CallMany,
                };
                let mut b = BytesMut::with_capacity(2 + function.len() + payload.len());
                put_call(&mut b, function, payload);
                (kind, *id, b.freeze())
            }
            Message::CallFds {
                id,
                descriptors,
                function,
                payload,
            } => {
                let mut b = BytesMut::with_capacity(3 + function.len() + payload.len());
                b.put_u8(*descriptors);
                put_call(&mut b, function, payload);
                (FrameType::CallFds, *id, b.freeze())
            }
            Message::Result { id, payload } => (FrameType::Result, *id, payload.clone()),
            Message::Error { id, error } => (FrameType::Error, *id, json(error)),
            Message::Cancel { id } => (FrameType::Cancel, *id, Bytes::new()),
            Message::Ping { nonce } => (FrameType::Ping, *nonce, Bytes::new()),
            Message::Pong { nonce } => (FrameType::Pong, *nonce, Bytes::new()),
            Message::Shutdown => (FrameType::Shutdown, 0, Bytes::new()),
        };
        Frame { kind, id, body }
    }

    /// The message a frame carries.
    ///
    /// # Errors
    ///
    /// [`MessageError`] for a malformed body.
    pub fn from_frame(frame: Frame) -> Result<Message, MessageError> {
        let Frame { kind, id, body } = frame;
        let parse_err = |source| MessageError::Json { kind, source };
        Ok(match kind {
            FrameType::Hello => Message::Hello(serde_json::from_slice(&body).map_err(parse_err)?),
            FrameType::Welcome => {
                Message::Welcome(serde_json::from_slice(&body).map_err(parse_err)?)
            }
            FrameType::Call | FrameType::CallMany => {
                let (function, payload) = parse_call(id, &body)?;
                let (function, payload) = (function.to_owned(), body.slice_ref(payload));
                if kind == FrameType::Call {
                    Message::Call {
                        id,
                        function,
                        payload,
                    }
                } else {
                    Message::CallMany {
                        id,
                        function,
                        payload,
                    }
                }
            }
            FrameType::CallFds => {
                let (descriptors, function, payload) = parse_call_fds(id, &body)?;
                Message::CallFds {
                    id,
                    descriptors,
                    function: function.to_owned(),
                    payload: body.slice_ref(payload),
                }
            }
            FrameType::Result => Message::Result { id, payload: body },
            FrameType::Error => Message::Error {
                id,
                error: serde_json::from_slice(&body).map_err(parse_err)?,
            },
            FrameType::Cancel => Message::Cancel { id },
            FrameType::Ping => Message::Ping { nonce: id },
            FrameType::Pong => Message::Pong { nonce: id },
            FrameType::Shutdown => Message::Shutdown,
        })
    }
}

mod erased {
    /// Serialises a JSON body; serialising these plain structs cannot fail.
    pub(super) trait Json {
        fn to_vec(&self) -> Vec<u8>;
    }

    impl<T: serde::Serialize> Json for T {
        fn to_vec(&self) -> Vec<u8> {
            serde_json::to_vec(self).expect("protocol bodies always serialise")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(m: Message) {
        assert_eq!(Message::from_frame(m.to_frame()).unwrap(), m);
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(Message::Hello(Hello {
            protocol: 1,
            functions: vec!["echo".into()],
            concurrency: 2,
            encodings: vec![Encoding::Postcard, Encoding::Json],
            pid: Some(7),
            batch: true,
            fds: true,
        }));
        round_trip(Message::Welcome(Welcome::default()));
        round_trip(Message::Call {
            id: 3,
            function: "echo".into(),
            payload: Bytes::from_static(b"\"hi\""),
        });
        round_trip(Message::CallMany {
            id: 3,
            function: "echo".into(),
            payload: Bytes::from_static(b"[1,2]"),
        });
        round_trip(Message::CallFds {
            id: 3,
            descriptors: 2,
            function: "serve".into(),
            payload: Bytes::from_static(b"null"),
        });
        round_trip(Message::Result {
            id: 3,
            payload: Bytes::from_static(b"[1,2]"),
        });
        round_trip(Message::Error {
            id: 4,
            error: ErrorBody {
                kind: ErrorKind::Failed,
                message: "no".into(),
                data: Some(serde_json::json!({"x": 1})),
            },
        });
        round_trip(Message::Cancel { id: 5 });
        round_trip(Message::Ping { nonce: 6 });
        round_trip(Message::Pong { nonce: 6 });
        round_trip(Message::Shutdown);
    }

    #[test]
    fn hello_from_another_language_uses_defaults_and_ignores_unknown_fields() {
        let body = br#"{"protocol": 1, "functions": ["echo"], "future_field": true}"#;
        let frame = Frame {
            kind: FrameType::Hello,
            id: 0,
            body: Bytes::from_static(body),
        };
        let Message::Hello(h) = Message::from_frame(frame).unwrap() else {
            panic!("not a hello")
        };
        assert_eq!(
            (h.concurrency, h.encodings.as_slice(), h.pid, h.batch, h.fds),
            (1, &[Encoding::Json][..], None, false, false)
        );
    }

    #[test]
    fn unknown_error_kinds_read_as_internal() {
        let body = br#"{"kind": "exploded", "message": "boom"}"#;
        let frame = Frame {
            kind: FrameType::Error,
            id: 9,
            body: Bytes::from_static(body),
        };
        let Message::Error { error, .. } = Message::from_frame(frame).unwrap() else {
            panic!("not an error")
        };
        assert_eq!(error.kind, ErrorKind::Internal);
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let bad_json = Frame {
            kind: FrameType::Hello,
            id: 0,
            body: Bytes::from_static(b"{not json"),
        };
        assert!(matches!(
            Message::from_frame(bad_json),
            Err(MessageError::Json {
                kind: FrameType::Hello,
                ..
            })
        ));
        let short_call = Frame {
            kind: FrameType::Call,
            id: 2,
            body: Bytes::from_static(b"\x00\x09echo"),
        };
        assert!(matches!(
            Message::from_frame(short_call),
            Err(MessageError::BadCall(2))
        ));
        for (count, body) in [(0u8, &b"\x00\x00\x04echo"[..]), (17, b"\x11\x00\x04echo")] {
            let frame = Frame {
                kind: FrameType::CallFds,
                id: 3,
                body: Bytes::copy_from_slice(body),
            };
            assert!(matches!(
                Message::from_frame(frame),
                Err(MessageError::BadDescriptorCount { id: 3, count: c }) if c == count
            ));
        }
        let no_count = Frame {
            kind: FrameType::CallFds,
            id: 4,
            body: Bytes::new(),
        };
        assert!(matches!(
            Message::from_frame(no_count),
            Err(MessageError::BadCall(4))
        ));
    }

    #[test]
    fn negotiation_picks_the_workers_preference_among_the_offered() {
        let hello = Hello {
            protocol: 3,
            functions: vec![],
            concurrency: 1,
            encodings: vec![Encoding::Postcard, Encoding::Json],
            pid: None,
            batch: false,
            fds: false,
        };
        let w = Welcome::negotiate(&hello, &[Encoding::Json], 1024, 0).unwrap();
        assert_eq!((w.protocol, w.encoding), (1, Encoding::Json));
        let w = Welcome::negotiate(&hello, &[Encoding::Json, Encoding::Postcard], 1024, 0).unwrap();
        assert_eq!(w.encoding, Encoding::Postcard);
        let none = Hello {
            encodings: vec![Encoding::Postcard],
            ..hello
        };
        assert!(Welcome::negotiate(&none, &[Encoding::Json], 1024, 0).is_none());
    }
}
