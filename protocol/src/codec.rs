//! The canonical encoding: every byte that is signed, hashed or sent to a peer goes through here.
//!
//! The encoding is bincode 2.0.1 (pinned with `=`) driven by serde, with one fixed configuration:
//! little-endian, variable-length integers ("varint"), no size limit beyond the ones checked
//! here. docs/PROTOCOL.md specifies the resulting bytes independently of the crate, and the golden
//! vectors in `protocol/tests/vectors/` fix them: if a dependency upgrade changed a single byte,
//! the vector test fails.
//!
//! Decoding is strict. Input longer than the caller's limit is refused before any parsing;
//! trailing bytes, truncated input, unknown enum variants and invalid values are typed errors;
//! and because bincode accepts non-minimal varints, every decoded value is re-encoded and must
//! reproduce the input exactly, so one value has exactly one encoding.

use serde::{de::DeserializeOwned, Serialize};

/// The one bincode configuration of the protocol.
///
/// The limit makes bincode refuse to claim more than [`DECODE_BUDGET`] bytes while decoding, on
/// top of the explicit input-length check in [`decode`]: a guard on what a length prefix may
/// make it allocate, never a rule on valid input.
const CONFIG: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<DECODE_BUDGET>,
> = bincode::config::standard().with_limit::<DECODE_BUDGET>();

/// What bincode may claim while decoding at most [`MAX_MESSAGE_BYTES`] of input. It counts 8
/// for every `u64` and length and 4 for every enum index, whatever their width on the wire
/// (a varint of one byte), so a full frame of valid events claims more than its length; at
/// most 8 claimed per byte read, this budget is never reached by input that fits.
const DECODE_BUDGET: usize = 8 * MAX_MESSAGE_BYTES;

/// The largest encoded value the protocol ever decodes: one sync frame. A single event is far
/// smaller (see [`crate::limits::MAX_EVENT_BYTES`]); batches of events are split to fit.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// An opaque byte string encoded as one length-prefixed run (serde's `bytes`: varint length,
/// then the bytes) rather than as a sequence of one-byte elements. For records that carry
/// bytes they do not interpret, such as the node's store journal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ByteBuf(pub Vec<u8>);

impl Serialize for ByteBuf {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ByteBuf {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(bytes.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(bytes))
            }
        }
        deserializer.deserialize_byte_buf(Visitor)
    }
}

/// Encoding failed. Only values that break a serde invariant (a map with keys bincode cannot
/// write, a value over the size limit) can fail; the protocol's own types never do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode value: {detail}")]
pub struct EncodeError {
    detail: String,
}

/// Why bytes could not be decoded. Decoding never panics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is longer than the limit for what is being decoded.
    #[error("input is {len} bytes, limit is {max}")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The input ended in the middle of a value.
    #[error("input is truncated: {additional} more bytes needed")]
    Truncated {
        /// How many more bytes the decoder needed at least.
        additional: usize,
    },
    /// A value was decoded but bytes are left after it.
    #[error("{trailing} trailing bytes after a {consumed}-byte value")]
    TrailingBytes {
        /// Bytes the value used.
        consumed: usize,
        /// Bytes left over.
        trailing: usize,
    },
    /// An enum tag names no variant of this protocol version.
    #[error("unknown variant: {detail}")]
    UnknownVariant {
        /// What the decoder saw.
        detail: String,
    },
    /// The bytes decode to something that is not a valid value (bad UTF-8, a bool that is not 0
    /// or 1, an invalid key, a handle that does not parse, ...).
    #[error("invalid value: {detail}")]
    Invalid {
        /// What was wrong.
        detail: String,
    },
    /// The bytes decode, but are not the canonical encoding of the value they decode to (for
    /// example an integer written in more bytes than needed).
    #[error("non-canonical encoding: re-encoding the value does not give the input bytes")]
    NonCanonical,
}

/// Encodes a value canonically.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodeError> {
    bincode::serde::encode_to_vec(value, CONFIG).map_err(|err| EncodeError {
        detail: err.to_string(),
    })
}

/// Decodes exactly one canonically encoded value from `bytes`, which must be at most `max_len`
/// bytes long (and never more than [`MAX_MESSAGE_BYTES`]).
pub fn decode<T: DeserializeOwned + Serialize>(
    bytes: &[u8],
    max_len: usize,
) -> Result<T, DecodeError> {
    let value: T = decode_own(bytes, max_len)?;
    let reencoded = encode(&value).map_err(|err| DecodeError::Invalid {
        detail: err.to_string(),
    })?;
    if reencoded != bytes {
        return Err(DecodeError::NonCanonical);
    }
    Ok(value)
}

/// Decodes exactly one value from `bytes` (at most `max_len` bytes) without the canonical
/// re-encoding check of [`decode`]: only for bytes a node wrote itself and has authenticated
/// since (a checksum, an AEAD tag), where the check would cost a second encoding and find
/// nothing. Never for what comes from a peer, a bridge or a client.
pub fn decode_own<T: DeserializeOwned>(bytes: &[u8], max_len: usize) -> Result<T, DecodeError> {
    let max = max_len.min(MAX_MESSAGE_BYTES);
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    let (value, consumed): (T, usize) =
        bincode::serde::decode_from_slice(bytes, CONFIG).map_err(map_decode_error)?;
    if consumed != bytes.len() {
        return Err(DecodeError::TrailingBytes {
            consumed,
            trailing: bytes.len() - consumed,
        });
    }
    Ok(value)
}

fn map_decode_error(err: bincode::error::DecodeError) -> DecodeError {
    use bincode::error::DecodeError as B;
    match err {
        B::UnexpectedEnd { additional } => DecodeError::Truncated { additional },
        B::LimitExceeded => DecodeError::TooLarge {
            len: MAX_MESSAGE_BYTES + 1,
            max: MAX_MESSAGE_BYTES,
        },
        B::UnexpectedVariant { found, .. } => DecodeError::UnknownVariant {
            detail: format!("tag {found}"),
        },
        // serde's derived enum visitors report an out-of-range tag as a custom error.
        B::OtherString(detail) if detail.contains("variant index") => {
            DecodeError::UnknownVariant { detail }
        }
        other => DecodeError::Invalid {
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_minimal_and_non_minimal_ones_are_refused() {
        assert_eq!(encode(&5u64).expect("encodes"), vec![5]);
        assert_eq!(encode(&300u64).expect("encodes"), vec![251, 0x2c, 0x01]);
        assert_eq!(decode::<u64>(&[251, 0x2c, 0x01], 16), Ok(300));
        // 5 written as a u16 varint: bincode accepts it, the protocol does not.
        assert_eq!(
            decode::<u64>(&[251, 5, 0], 16),
            Err(DecodeError::NonCanonical)
        );
    }

    #[test]
    fn trailing_truncated_and_oversize_input_are_typed_errors() {
        assert_eq!(
            decode::<u64>(&[5, 0], 16),
            Err(DecodeError::TrailingBytes {
                consumed: 1,
                trailing: 1
            })
        );
        assert!(matches!(
            decode::<u64>(&[251, 0x2c], 16),
            Err(DecodeError::Truncated { .. })
        ));
        assert_eq!(
            decode::<u64>(&[0; 17], 16),
            Err(DecodeError::TooLarge { len: 17, max: 16 })
        );
        assert!(matches!(
            decode::<bool>(&[2], 16),
            Err(DecodeError::Invalid { .. })
        ));
    }

    #[test]
    fn errors_display_their_data() {
        assert_eq!(
            DecodeError::TooLarge { len: 17, max: 16 }.to_string(),
            "input is 17 bytes, limit is 16"
        );
        assert_eq!(
            DecodeError::TrailingBytes {
                consumed: 1,
                trailing: 2
            }
            .to_string(),
            "2 trailing bytes after a 1-byte value"
        );
    }
}
