//! Payload encodings (`docs/protocol.md`, section 4).

use std::cell::Cell;
use std::marker::PhantomData;

use bytes::Bytes;
use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// How call arguments and results are encoded on the channel.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// UTF-8 JSON; every worker accepts it.
    Json,
    /// The `postcard` binary format, for Rust workers built with this crate.
    Postcard,
}

/// A payload could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("{encoding:?} payload: {message}")]
pub struct PayloadError {
    /// The encoding in use.
    pub encoding: Encoding,
    /// What went wrong.
    pub message: String,
}

impl Encoding {
    /// Encodes one value.
    ///
    /// # Errors
    ///
    /// [`PayloadError`] if the value cannot be represented (e.g. a map with
    /// non-string keys in JSON).
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Bytes, PayloadError> {
        self.encode_vec(value).map(Bytes::from)
    }

    /// Encodes one value into `buf`: `Some(len)` with the bytes written, `None` if it does not
    /// fit (`buf` is then garbage).
    pub(crate) fn encode_into<T: Serialize + ?Sized>(
        self,
        value: &T,
        buf: &mut [u8],
    ) -> Result<Option<usize>, PayloadError> {
        match self {
            Encoding::Json => {
                let size = buf.len();
                let mut rest = &mut *buf;
                match serde_json::to_writer(&mut rest, value) {
                    Ok(()) => Ok(Some(size - rest.len())),
                    Err(e) if e.is_io() => Ok(None),
                    Err(e) => Err(self.error(e)),
                }
            }
            Encoding::Postcard => match postcard::to_slice(value, buf) {
                Ok(used) => Ok(Some(used.len())),
                Err(postcard::Error::SerializeBufferFull) => Ok(None),
                Err(e) => Err(self.error(e)),
            },
        }
    }

    /// Encodes one value into a fresh vector.
    pub(crate) fn encode_vec<T: Serialize + ?Sized>(
        self,
        value: &T,
    ) -> Result<Vec<u8>, PayloadError> {
        match self {
            Encoding::Json => serde_json::to_vec(value).map_err(|e| self.error(e)),
            Encoding::Postcard => postcard::to_allocvec(value).map_err(|e| self.error(e)),
        }
    }

    /// Decodes a sequence of values (a `CALL_MANY` payload). On failure, also tells which item
    /// failed: `Some(index)` for an item that is not a `T`, `None` if the payload is not a
    /// sequence at all.
    pub(crate) fn decode_seq<T: DeserializeOwned>(
        self,
        bytes: &[u8],
    ) -> Result<Vec<T>, (Option<usize>, PayloadError)> {
        let at = Cell::new(None);
        let seed = SeqSeed {
            at: &at,
            item: PhantomData::<T>,
        };
        let decoded = match self {
            Encoding::Json => {
                let mut de = serde_json::Deserializer::from_slice(bytes);
                seed.deserialize(&mut de)
                    .and_then(|v| de.end().map(|()| v))
                    .map_err(|e| self.error(e))
            }
            Encoding::Postcard => {
                let mut de = postcard::Deserializer::from_bytes(bytes);
                seed.deserialize(&mut de)
                    .map_err(|e| self.error(e))
                    .and_then(|v| match de.finalize() {
                        Ok([]) => Ok(v),
                        Ok(rest) => Err(self.trailing(rest.len())),
                        Err(e) => Err(self.error(e)),
                    })
            }
        };
        decoded.map_err(|e| (at.get(), e))
    }

    /// Decodes one value.
    ///
    /// # Errors
    ///
    /// [`PayloadError`] if the bytes are not a `T` in this encoding.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, PayloadError> {
        match self {
            Encoding::Json => serde_json::from_slice(bytes).map_err(|e| self.error(e)),
            // Postcard is not self-delimiting against the wrong type: bytes
            // left over mean the payload was something else.
            Encoding::Postcard => match postcard::take_from_bytes(bytes) {
                Ok((value, [])) => Ok(value),
                Ok((_, rest)) => Err(self.trailing(rest.len())),
                Err(e) => Err(self.error(e)),
            },
        }
    }

    fn trailing(self, left: usize) -> PayloadError {
        self.error(format!("{left} bytes left over after the value"))
    }

    fn error(self, e: impl std::fmt::Display) -> PayloadError {
        PayloadError {
            encoding: self,
            message: e.to_string(),
        }
    }
}

/// Deserialises a sequence item by item, noting in `at` the index being decoded, so a failure
/// names its item. A sequence's own length is only a hint: a hostile length cannot make it
/// reserve more than a few pages up front.
struct SeqSeed<'a, T> {
    at: &'a Cell<Option<usize>>,
    item: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for SeqSeed<'_, T> {
    type Value = Vec<T>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<T>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for SeqSeed<'_, T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a sequence of arguments")
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Vec<T>, S::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        loop {
            self.at.set(Some(items.len()));
            match seq.next_element()? {
                Some(item) => items.push(item),
                None => break,
            }
        }
        self.at.set(None);
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_encodings_round_trip_tuples_and_structs() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Job {
            path: String,
            size: (u32, u32),
        }
        let job = Job {
            path: "a.png".into(),
            size: (64, 48),
        };
        for enc in [Encoding::Json, Encoding::Postcard] {
            let bytes = enc.encode(&job).unwrap();
            assert_eq!(enc.decode::<Job>(&bytes).unwrap(), job);
            let args = enc.encode(&(1u8, "x")).unwrap();
            assert_eq!(
                enc.decode::<(u8, String)>(&args).unwrap(),
                (1, "x".to_owned())
            );
        }
        // The JSON shapes the spec promises other languages.
        assert_eq!(&Encoding::Json.encode(&(1, "x")).unwrap()[..], b"[1,\"x\"]");
        assert_eq!(&Encoding::Json.encode(&()).unwrap()[..], b"null");
    }

    #[test]
    fn sequences_decode_and_name_the_failing_item() {
        for enc in [Encoding::Json, Encoding::Postcard] {
            let good = enc.encode(&[1u32, 2, 3][..]).unwrap();
            assert_eq!(enc.decode_seq::<u32>(&good).unwrap(), [1, 2, 3]);
        }
        let json = Encoding::Json.encode(&(1u32, 2u32, "three", 4u32)).unwrap();
        let (at, _) = Encoding::Json.decode_seq::<u32>(&json).unwrap_err();
        assert_eq!(at, Some(2));
        // Three postcard u32s, the third an overlong varint.
        let postcard = [3u8, 1, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        let (at, _) = Encoding::Postcard.decode_seq::<u32>(&postcard).unwrap_err();
        assert_eq!(at, Some(2));
        let (at, _) = Encoding::Json.decode_seq::<u32>(b"{\"a\": 1}").unwrap_err();
        assert_eq!(at, None, "not a sequence at all");
    }

    #[test]
    fn bad_payloads_are_errors() {
        let err = Encoding::Json.decode::<u32>(b"\"nope\"").unwrap_err();
        assert_eq!(err.encoding, Encoding::Json);
        assert!(Encoding::Postcard
            .decode::<String>(&[0xff, 0xff, 0xff])
            .is_err());
    }

    #[test]
    fn postcard_refuses_bytes_left_over_after_the_value() {
        // A string's bytes read as two small integers would silently drop the rest.
        let text = Encoding::Postcard.encode(&"text").unwrap();
        let err = Encoding::Postcard.decode::<(u8, u8)>(&text).unwrap_err();
        assert!(err.to_string().contains("left over"), "{err}");
        let seq = Encoding::Postcard.encode(&vec![1u64, 2]).unwrap();
        let mut longer = seq.to_vec();
        longer.push(0);
        assert!(Encoding::Postcard.decode_seq::<u64>(&longer).is_err());
        assert_eq!(
            Encoding::Postcard.decode_seq::<u64>(&seq).unwrap(),
            vec![1, 2]
        );
    }
}
