//! Call arguments and answer values as the pool holds them: small ones inline, larger ones
//! as shared bytes.
//!
//! # Implementation notes
//!
//! Most calls carry a few bytes each way (an id, a number, a short string). Holding those in
//! the call itself saves an allocation per argument (encoded into a stack buffer first, see
//! [`Payload::encode`]) and per answer (copied out of the read buffer, so the caller does not
//! share the buffer's reference count with the connection task on another thread). Anything
//! longer than [`INLINE`] bytes is `Bytes`, as before.

use std::ops::Deref;

use bytes::Bytes;
use serde::Serialize;

use crate::protocol::{Encoding, PayloadError};

/// The longest payload held inline.
pub(crate) const INLINE: usize = 30;

/// One encoded argument or value.
#[derive(Clone)]
pub(crate) enum Payload {
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Bytes),
}

impl Payload {
    /// `value` encoded with `encoding`: inline if it fits, with no allocation.
    pub(crate) fn encode<T: Serialize + ?Sized>(
        encoding: Encoding,
        value: &T,
    ) -> Result<Self, PayloadError> {
        let mut bytes = [0u8; INLINE];
        match encoding.encode_into(value, &mut bytes)? {
            Some(len) => Ok(Payload::Inline {
                len: len as u8,
                bytes,
            }),
            None => encoding.encode(value).map(Payload::Shared),
        }
    }

    /// A copy of `bytes`: inline if it fits.
    #[cfg(test)]
    pub(crate) fn copy_from(bytes: &[u8]) -> Self {
        match Self::inline(bytes) {
            Some(inline) => inline,
            None => Payload::Shared(Bytes::copy_from_slice(bytes)),
        }
    }

    /// `bytes` inline, if they fit.
    pub(crate) fn inline(bytes: &[u8]) -> Option<Self> {
        let mut inline = [0u8; INLINE];
        inline.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(Payload::Inline {
            len: bytes.len() as u8,
            bytes: inline,
        })
    }

    /// As shared bytes (copied if inline).
    pub(crate) fn to_bytes(&self) -> Bytes {
        match self {
            Payload::Inline { .. } => Bytes::copy_from_slice(self),
            Payload::Shared(bytes) => bytes.clone(),
        }
    }
}

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Self {
        Payload::Shared(bytes)
    }
}

impl Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Payload::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Payload::Shared(bytes) => bytes,
        }
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Payload").field(&&**self).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small values stay inline, larger ones are shared; both read back the same bytes as a
    /// plain encoding, in both encodings, at and around the inline limit.
    #[test]
    fn payloads_hold_what_the_encoding_writes_inline_or_shared() {
        for encoding in [Encoding::Json, Encoding::Postcard] {
            for len in [
                0usize,
                1,
                INLINE - 3,
                INLINE - 2,
                INLINE - 1,
                INLINE,
                100,
                5000,
            ] {
                let value = "x".repeat(len);
                let payload = Payload::encode(encoding, &value).unwrap();
                let plain = encoding.encode(&value).unwrap();
                assert_eq!(&*payload, &plain[..], "{encoding:?}, {len} bytes");
                let inline = matches!(payload, Payload::Inline { .. });
                assert_eq!(inline, plain.len() <= INLINE, "{encoding:?}, {len} bytes");
                assert_eq!(&*Payload::copy_from(&plain), &plain[..]);
                assert_eq!(payload.to_bytes(), plain);
            }
        }
    }

    /// A value the encoding cannot represent is an error, not a fallback to the heap.
    #[test]
    fn an_unencodable_value_is_an_error_inline_or_not() {
        let mut map = std::collections::HashMap::new();
        map.insert((1, 2), 3);
        assert!(Payload::encode(Encoding::Json, &map).is_err());
    }
}
