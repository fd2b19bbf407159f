//! Fixed-size identifiers: digests (event ids, content hashes) and random ids (contacts, agents).
//!
//! Each is a newtype over a byte array. In the canonical encoding it is the raw bytes (no length
//! prefix); in human-readable formats (JSON) it is lowercase hex.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A hex string did not parse as an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdParseError {
    /// The string is not hex.
    #[error("{kind} is not hex: {detail}")]
    NotHex {
        /// Which id type was being parsed.
        kind: &'static str,
        /// What the hex decoder said.
        detail: String,
    },
    /// The hex has the wrong number of bytes.
    #[error("{kind} must be {expected} bytes, got {found}")]
    WrongLength {
        /// Which id type was being parsed.
        kind: &'static str,
        /// Bytes expected.
        expected: usize,
        /// Bytes found.
        found: usize,
    },
}

pub(crate) fn parse_hex<const N: usize>(
    kind: &'static str,
    s: &str,
) -> Result<[u8; N], IdParseError> {
    let bytes = hex::decode(s).map_err(|err| IdParseError::NotHex {
        kind,
        detail: err.to_string(),
    })?;
    let found = bytes.len();
    bytes.try_into().map_err(|_| IdParseError::WrongLength {
        kind,
        expected: N,
        found,
    })
}

/// Writes N bytes: lowercase hex for humans, otherwise a tuple (bincode: the raw bytes, no
/// length prefix).
pub(crate) fn serialize_bytes<S: Serializer, const N: usize>(
    bytes: &[u8; N],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeTuple;
    if serializer.is_human_readable() {
        return serializer.serialize_str(&hex::encode(bytes));
    }
    let mut tuple = serializer.serialize_tuple(N)?;
    for byte in bytes {
        tuple.serialize_element(byte)?;
    }
    tuple.end()
}

/// Reads what [`serialize_bytes`] writes.
pub(crate) fn deserialize_bytes<'de, D: Deserializer<'de>, const N: usize>(
    kind: &'static str,
    deserializer: D,
) -> Result<[u8; N], D::Error> {
    struct Visitor<const N: usize>(&'static str);
    impl<'de, const N: usize> serde::de::Visitor<'de> for Visitor<N> {
        type Value = [u8; N];
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{} bytes of {}", N, self.0)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; N], A::Error> {
            let mut bytes = [0u8; N];
            for (idx, byte) in bytes.iter_mut().enumerate() {
                *byte = seq
                    .next_element()?
                    .ok_or_else(|| serde::de::Error::invalid_length(idx, &self))?;
            }
            Ok(bytes)
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<[u8; N], E> {
            parse_hex(self.0, text).map_err(E::custom)
        }
    }
    if deserializer.is_human_readable() {
        deserializer.deserialize_str(Visitor::<N>(kind))
    } else {
        deserializer.deserialize_tuple(N, Visitor::<N>(kind))
    }
}

macro_rules! byte_id {
    ($(#[$meta:meta])* $name:ident, $len:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name([u8; $len]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = $len;

            /// The id with these bytes.
            pub const fn from_bytes(bytes: [u8; $len]) -> Self {
                $name(bytes)
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($name), "({}…)"), hex::encode(&self.0[..4]))
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                crate::id::parse_hex(stringify!($name), s).map($name)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                crate::id::serialize_bytes(&self.0, serializer)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                crate::id::deserialize_bytes(stringify!($name), deserializer).map($name)
            }
        }
    };
}

byte_id!(
    /// An event's id: the SHA-256 of its domain-separated signed header (see [`crate::digest`]).
    EventId,
    32
);
byte_id!(
    /// A thread's id: the [`EventId`] of the thread's opening event. It cannot be chosen, so a
    /// thread has exactly one root.
    ThreadId,
    32
);
byte_id!(
    /// The SHA-256 of an event's domain-separated content; the signed header carries it.
    ContentHash,
    32
);
byte_id!(
    /// The SHA-256 of an attachment's bytes (blobs are stored and fetched by this hash).
    BlobHash,
    32
);
byte_id!(
    /// A digest of a derived state (thread or directory); replicas compare these.
    StateHash,
    32
);
byte_id!(
    /// A contact's id: 16 random bytes minted by the node that created the contact.
    ContactId,
    16
);
byte_id!(
    /// An agent's id: 16 random bytes minted when the agent is added to the org.
    AgentId,
    16
);

impl BlobHash {
    /// The hash of a blob's bytes: plain SHA-256, no domain, so an operator can check a
    /// stored attachment with `sha256sum`.
    pub fn of(bytes: &[u8]) -> Self {
        BlobHash(<sha2::Sha256 as sha2::Digest>::digest(bytes).into())
    }
}

impl ThreadId {
    /// The thread whose opening event has this id.
    pub const fn from_root(root: EventId) -> Self {
        ThreadId(root.0)
    }
}

impl ContactId {
    /// A fresh random contact id.
    pub fn random<R: rand_core::CryptoRngCore + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        ContactId(bytes)
    }
}

impl AgentId {
    /// A fresh random agent id.
    pub fn random<R: rand_core::CryptoRngCore + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        AgentId(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_hex_and_json() {
        let id = EventId::from_bytes([0xab; 32]);
        let text = id.to_string();
        assert_eq!(text, "ab".repeat(32));
        assert_eq!(text.parse::<EventId>(), Ok(id));
        let json = serde_json::to_string(&id).expect("serializes");
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<EventId>(&json).expect("parses"), id);
        assert_eq!(format!("{id:?}"), "EventId(abababab…)");
    }

    #[test]
    fn bad_hex_is_a_typed_error() {
        assert_eq!(
            "abcd".parse::<ContactId>(),
            Err(IdParseError::WrongLength {
                kind: "ContactId",
                expected: 16,
                found: 2
            })
        );
        assert!(matches!(
            "zz".parse::<AgentId>(),
            Err(IdParseError::NotHex { .. })
        ));
    }

    #[test]
    fn binary_encoding_is_the_raw_bytes() {
        let id = ContactId::from_bytes([7; 16]);
        assert_eq!(crate::codec::encode(&id).expect("encodes"), vec![7; 16]);
    }
}
