//! Payload encodings (`docs/protocol.md`, section 4).

use bytes::Bytes;
use serde::de::DeserializeOwned;
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
        let bytes = match self {
            Encoding::Json => serde_json::to_vec(value).map_err(|e| self.error(e))?,
            Encoding::Postcard => postcard::to_allocvec(value).map_err(|e| self.error(e))?,
        };
        Ok(Bytes::from(bytes))
    }

    /// Decodes one value.
    ///
    /// # Errors
    ///
    /// [`PayloadError`] if the bytes are not a `T` in this encoding.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, PayloadError> {
        match self {
            Encoding::Json => serde_json::from_slice(bytes).map_err(|e| self.error(e)),
            Encoding::Postcard => postcard::from_bytes(bytes).map_err(|e| self.error(e)),
        }
    }

    fn error(self, e: impl std::fmt::Display) -> PayloadError {
        PayloadError {
            encoding: self,
            message: e.to_string(),
        }
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
    fn bad_payloads_are_errors() {
        let err = Encoding::Json.decode::<u32>(b"\"nope\"").unwrap_err();
        assert_eq!(err.encoding, Encoding::Json);
        assert!(Encoding::Postcard
            .decode::<String>(&[0xff, 0xff, 0xff])
            .is_err());
    }
}
