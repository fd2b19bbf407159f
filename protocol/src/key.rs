//! Keys and signatures: ed25519 (ed25519-dalek 3, the version libp2p-identity 0.3 and libp2p 0.57 use).
//!
//! [`PublicKey`] is any verifying key; [`OrgId`] and [`NodeId`] name the role a key plays.
//! [`SecretKey`] signs, always with a [`Domain`].

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::digest::{self, Domain};
use crate::id::{deserialize_bytes, parse_hex, serialize_bytes, IdParseError};

/// A key or signature was not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The 32 bytes are not a point on the curve.
    #[error("not an ed25519 public key: {detail}")]
    NotAPoint {
        /// What ed25519-dalek said.
        detail: String,
    },
    /// The key is of small order, so signatures under it prove nothing.
    #[error("weak (small-order) ed25519 public key")]
    Weak,
    /// The bytes encode a point in a non-canonical way.
    #[error("non-canonical ed25519 public key encoding")]
    NonCanonical,
    /// The text was not hex of the right length.
    #[error(transparent)]
    Parse(#[from] IdParseError),
}

/// A signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signature by {signer} does not verify in domain {domain}")]
pub struct BadSignature {
    /// The key the signature claims.
    pub signer: PublicKey,
    /// The domain it was checked in.
    pub domain: &'static str,
}

/// An ed25519 public key: 32 bytes of a compressed point.
///
/// Constructors from bytes and text check everything ([`PublicKey::from_bytes`]: a curve point,
/// canonical, not of small order). Decoding checks only what is cheap (the canonical encoding)
/// and leaves the curve check to signature verification, which has to decompress the point
/// anyway: a key that is not a valid point simply never verifies a signature. Keeping the type
/// at 32 bytes keeps headers, errors and indexes small.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The key with these bytes, if they are a valid, canonical, non-weak ed25519 public key.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let key = PublicKey::from_canonical_bytes(bytes)?;
        key.verifying_key()?;
        Ok(key)
    }

    fn from_canonical_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        // ed25519-dalek accepts a y coordinate of p = 2^255 - 19 or more; one key has one
        // encoding here. (The other non-canonical form, x = 0 with the sign bit set, only
        // exists for small-order points, which are refused as weak.)
        if !y_is_canonical(bytes) {
            return Err(KeyError::NonCanonical);
        }
        Ok(PublicKey(*bytes))
    }

    /// The 32 bytes of the compressed point.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The decompressed ed25519-dalek key, for verification and conversions (libp2p's PeerId).
    /// Fails if the bytes are not a point or the point is of small order.
    pub fn verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|err| KeyError::NotAPoint {
            detail: err.to_string(),
        })?;
        if key.is_weak() {
            return Err(KeyError::Weak);
        }
        Ok(key)
    }

    /// Verifies `signature` over `domain || 0x00 || message` by the protocol's rule (canonical
    /// encodings, no small-order points, the cofactored equation: see [`crate::verify`]). A key
    /// that is not a valid point verifies nothing.
    pub fn verify(
        &self,
        domain: Domain,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), BadSignature> {
        let bad = || BadSignature {
            signer: *self,
            domain: domain.as_str(),
        };
        let key = crate::verify::Key::new(self).ok_or_else(bad)?;
        let prepared = crate::verify::prepare(&key, &digest::separated(domain, message), signature)
            .ok_or_else(bad)?;
        if crate::verify::check_one(&prepared) {
            Ok(())
        } else {
            Err(bad())
        }
    }
}

/// Whether the little-endian y coordinate (sign bit masked) is below p = 2^255 - 19, whose
/// bytes are `ed ff .. ff 7f`.
fn y_is_canonical(bytes: &[u8; 32]) -> bool {
    let top_is_max = bytes[31] & 0x7f == 0x7f && bytes[1..31].iter().all(|b| *b == 0xff);
    !(top_is_max && bytes[0] >= 0xed)
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.as_bytes()))
    }
}
impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({}…)", hex::encode(&self.as_bytes()[..4]))
    }
}
impl std::str::FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PublicKey::from_bytes(&parse_hex("PublicKey", s)?)
    }
}
impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_bytes(self.as_bytes(), serializer)
    }
}
impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes: [u8; 32] = deserialize_bytes("PublicKey", deserializer)?;
        PublicKey::from_canonical_bytes(&bytes).map_err(de::Error::custom)
    }
}

/// An ed25519 signature: 64 bytes, written raw in the canonical encoding.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; 64]);

impl Signature {
    /// The signature with these bytes (not checked until verified).
    pub const fn from_bytes(bytes: [u8; 64]) -> Self {
        Signature(bytes)
    }
    /// The 64 bytes.
    pub const fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({}…)", hex::encode(&self.0[..4]))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_bytes(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_bytes("Signature", deserializer).map(Signature)
    }
}

/// An ed25519 signing key. It has no serde impls and its `Debug` shows only the public key.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// The key with this 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        SecretKey(SigningKey::from_bytes(&seed))
    }

    /// A fresh random key.
    pub fn generate<R: rand_core::CryptoRngCore + ?Sized>(rng: &mut R) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        SecretKey::from_seed(seed)
    }

    /// The 32-byte seed (to store the key).
    pub fn to_seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `domain || 0x00 || message`.
    pub fn sign(&self, domain: Domain, message: &[u8]) -> Signature {
        Signature(self.0.sign(&digest::separated(domain, message)).to_bytes())
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(public: {:?})", self.public())
    }
}

macro_rules! role_key {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub PublicKey);

        impl $name {
            /// The underlying public key.
            pub const fn public_key(&self) -> &PublicKey {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = KeyError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map($name)
            }
        }
    };
}

role_key!(
    /// An org's identity: its org key, the root of trust for its nodes, bridges and agents.
    OrgId
);
role_key!(
    /// A node's identity: its node key, which is also its libp2p identity (PeerId).
    NodeId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_bound_to_their_domain() {
        let key = SecretKey::from_seed([1; 32]);
        let signature = key.sign(Domain::EventSignature, b"hello");
        assert_eq!(
            key.public()
                .verify(Domain::EventSignature, b"hello", &signature),
            Ok(())
        );
        let err = key
            .public()
            .verify(Domain::CertificateSignature, b"hello", &signature)
            .expect_err("another domain must not verify");
        assert_eq!(err.domain, "threadline/cert/v1");
        assert!(key
            .public()
            .verify(Domain::EventSignature, b"hellO", &signature)
            .is_err());
    }

    #[test]
    fn weak_and_invalid_keys_are_refused() {
        // The identity point (small order).
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(PublicKey::from_bytes(&identity), Err(KeyError::Weak));
        // y = 2 is not the y coordinate of any curve point.
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        assert!(matches!(
            PublicKey::from_bytes(&not_a_point),
            Err(KeyError::NotAPoint { .. })
        ));
        // y = p + 2 (non-canonical), encoded little-endian: 0xef, 0xff.., 0x7f.
        let mut non_canonical = [0xffu8; 32];
        non_canonical[0] = 0xef;
        non_canonical[31] = 0x7f;
        assert!(PublicKey::from_bytes(&non_canonical).is_err());
        assert!(!y_is_canonical(&non_canonical));
        let mut p_minus_one = [0xffu8; 32];
        p_minus_one[0] = 0xec;
        p_minus_one[31] = 0x7f;
        assert!(y_is_canonical(&p_minus_one));
    }

    #[test]
    fn keys_and_signatures_round_trip_in_both_encodings() {
        let key = SecretKey::from_seed([2; 32]);
        let public = key.public();
        let bytes = crate::codec::encode(&public).expect("encodes");
        assert_eq!(bytes.as_slice(), public.as_bytes());
        assert_eq!(crate::codec::decode::<PublicKey>(&bytes, 64), Ok(public));
        let signature = key.sign(Domain::EventSignature, b"x");
        let bytes = crate::codec::encode(&signature).expect("encodes");
        assert_eq!(bytes.len(), 64);
        assert_eq!(crate::codec::decode::<Signature>(&bytes, 64), Ok(signature));
        let json = serde_json::to_string(&signature).expect("serializes");
        assert_eq!(
            serde_json::from_str::<Signature>(&json).expect("parses"),
            signature
        );
        assert_eq!(public.to_string().parse::<PublicKey>(), Ok(public));
        assert_eq!(format!("{key:?}"), format!("SecretKey(public: {public:?})"));
    }
}
