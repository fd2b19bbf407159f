//! The protocol's signature acceptance rule, for one signature and for a batch.
//!
//! A signature `(R, s)` by key `A` over message `M` is accepted when:
//!
//! 1. `A` is a canonical encoding of a point that is not of small order (checked when the key
//!    is decompressed, see [`PublicKey::verifying_key`]);
//! 2. `R` is a canonical encoding of a point that is not of small order;
//! 3. `s` is canonical (`s < ℓ`);
//! 4. the **cofactored** equation holds: `[8]([s]B − [k]A − R) = 0`, with
//!    `k = SHA-512(R ‖ A ‖ M) mod ℓ`.
//!
//! Every signature made by an honest ed25519 signer (RFC 8032) is accepted. Why cofactored:
//! a batch check of the cofactored equation accepts a batch exactly when every signature in it
//! satisfies the cofactored equation (up to a 2⁻¹²⁸ chance), so a node may verify a batch at
//! once or each signature alone and reach the same verdict on every event, whatever the batch
//! it happens to arrive in. The cofactorless equation has no such batch check (a batch of them
//! is judged differently depending on its random coefficients), which is why the protocol does
//! not use it. This is the reasoning of ZIP-215, with canonical encodings required as well.

use curve25519_dalek::{
    constants::ED25519_BASEPOINT_POINT,
    edwards::{CompressedEdwardsY, EdwardsPoint},
    scalar::Scalar,
    traits::{IsIdentity, VartimeMultiscalarMul},
};
use sha2::{Digest, Sha512};

use crate::key::{PublicKey, Signature};

/// One signature, decoded and ready for the equation.
#[derive(Clone, Copy)]
pub(crate) struct Prepared {
    key: EdwardsPoint,
    key_bytes: [u8; 32],
    r: EdwardsPoint,
    s: Scalar,
    k: Scalar,
}

/// A key decompressed once, for many signatures.
#[derive(Clone, Copy)]
pub(crate) struct Key {
    point: EdwardsPoint,
    bytes: [u8; 32],
}

impl Key {
    /// Decompresses `key`; `None` if it is not an acceptable key (rule 1).
    pub(crate) fn new(key: &PublicKey) -> Option<Key> {
        let point = key.verifying_key().ok()?.to_edwards();
        Some(Key {
            point,
            bytes: *key.as_bytes(),
        })
    }
}

/// Checks rules 2 and 3 and computes `k`; `None` if the signature is malformed.
pub(crate) fn prepare(key: &Key, message: &[u8], signature: &Signature) -> Option<Prepared> {
    let bytes = signature.as_bytes();
    let mut r_bytes = [0u8; 32];
    r_bytes.copy_from_slice(&bytes[..32]);
    let mut s_bytes = [0u8; 32];
    s_bytes.copy_from_slice(&bytes[32..]);
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))?;
    let r = CompressedEdwardsY(r_bytes).decompress()?;
    if r.compress().to_bytes() != r_bytes || r.is_small_order() {
        return None;
    }
    let mut hasher = Sha512::new();
    hasher.update(r_bytes);
    hasher.update(key.bytes);
    hasher.update(message);
    let k = Scalar::from_bytes_mod_order_wide(&hasher.finalize().into());
    Some(Prepared {
        key: key.point,
        key_bytes: key.bytes,
        r,
        s,
        k,
    })
}

/// Rule 4 for one signature.
pub(crate) fn check_one(sig: &Prepared) -> bool {
    let sb_minus_ka = EdwardsPoint::vartime_double_scalar_mul_basepoint(&sig.k, &-sig.key, &sig.s);
    (sb_minus_ka - sig.r).mul_by_cofactor().is_identity()
}

/// Rule 4 for many signatures at once: `true` means every one of them satisfies it (but for a
/// 2⁻¹²⁸ chance); `false` means at least one does not, and the caller checks them one by one.
///
/// Checks `[8]([Σ zᵢsᵢ]B − Σ [zᵢkᵢ]Aᵢ − Σ [zᵢ]Rᵢ) = 0` with 128-bit coefficients `zᵢ` derived
/// from a hash of the whole batch (so they are unpredictable to whoever made the signatures,
/// and the function stays deterministic and pure). Signatures by the same key share one term.
pub(crate) fn check_batch(sigs: &[Prepared]) -> bool {
    match sigs {
        [] => return true,
        [one] => return check_one(one),
        _ => {}
    }
    let mut transcript = Sha512::new();
    transcript.update(b"threadline/batch-verify/v1");
    for sig in sigs {
        transcript.update(sig.r.compress().as_bytes());
        transcript.update(sig.key_bytes);
        transcript.update(sig.s.as_bytes());
        transcript.update(sig.k.as_bytes());
    }
    let seed: [u8; 64] = transcript.finalize().into();
    let mut base = Scalar::ZERO;
    let mut key_terms: Vec<([u8; 32], EdwardsPoint, Scalar)> = Vec::new();
    let mut scalars = Vec::with_capacity(sigs.len() + 4);
    let mut points = Vec::with_capacity(sigs.len() + 4);
    for (index, sig) in sigs.iter().enumerate() {
        let mut hasher = Sha512::new();
        hasher.update(seed);
        hasher.update((index as u64).to_le_bytes());
        let digest: [u8; 64] = hasher.finalize().into();
        let mut z_bytes = [0u8; 16];
        z_bytes.copy_from_slice(&digest[..16]);
        let z = Scalar::from(u128::from_le_bytes(z_bytes));
        base += z * sig.s;
        scalars.push(-z);
        points.push(sig.r);
        match key_terms
            .iter_mut()
            .find(|(bytes, _, _)| *bytes == sig.key_bytes)
        {
            Some((_, _, coefficient)) => *coefficient -= z * sig.k,
            None => key_terms.push((sig.key_bytes, sig.key, -(z * sig.k))),
        }
    }
    scalars.push(base);
    points.push(ED25519_BASEPOINT_POINT);
    for (_, point, coefficient) in key_terms {
        scalars.push(coefficient);
        points.push(point);
    }
    EdwardsPoint::vartime_multiscalar_mul(scalars, points)
        .mul_by_cofactor()
        .is_identity()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::SecretKey;

    fn signed(key: &SecretKey, message: &[u8]) -> (Key, Signature) {
        use ed25519_dalek::Signer;
        let dalek = ed25519_dalek::SigningKey::from_bytes(&key.to_seed());
        let signature = Signature::from_bytes(dalek.sign(message).to_bytes());
        (Key::new(&key.public()).expect("key"), signature)
    }

    #[test]
    fn honest_signatures_pass_alone_and_in_batches() {
        let keys: Vec<SecretKey> = (0..3u8)
            .map(|i| SecretKey::from_seed([i + 1; 32]))
            .collect();
        let mut prepared = Vec::new();
        for i in 0..10u8 {
            let message = [i; 40];
            let (key, signature) = signed(&keys[usize::from(i) % 3], &message);
            let sig = prepare(&key, &message, &signature).expect("well-formed");
            assert!(check_one(&sig));
            prepared.push(sig);
        }
        assert!(check_batch(&prepared));
    }

    #[test]
    fn one_bad_signature_fails_the_batch_and_only_itself() {
        let key = SecretKey::from_seed([7; 32]);
        let mut prepared = Vec::new();
        for i in 0..5u8 {
            let (k, signature) = signed(&key, &[i]);
            // Signature 3 is checked against another message.
            let message = if i == 3 { [99u8] } else { [i] };
            prepared.push(prepare(&k, &message, &signature).expect("well-formed"));
        }
        assert!(!check_batch(&prepared));
        let alone: Vec<bool> = prepared.iter().map(check_one).collect();
        assert_eq!(alone, [true, true, true, false, true]);
    }

    #[test]
    fn malformed_signatures_are_refused_before_the_equation() {
        let key = SecretKey::from_seed([5; 32]);
        let (k, signature) = signed(&key, b"m");
        // s = ℓ (not canonical: s + ℓ would otherwise verify the same).
        let mut bytes = *signature.as_bytes();
        bytes[32..].copy_from_slice(&[
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ]);
        assert!(prepare(&k, b"m", &Signature::from_bytes(bytes)).is_none());
        // R = identity (small order).
        let mut bytes = *signature.as_bytes();
        bytes[..32].copy_from_slice(&EdwardsPoint::default().compress().to_bytes());
        assert!(prepare(&k, b"m", &Signature::from_bytes(bytes)).is_none());
        // R not canonical: y = p + 1 encodes the same point as y = 1.
        let mut bytes = *signature.as_bytes();
        let mut y = [0xffu8; 32];
        y[0] = 0xee;
        y[31] = 0x7f;
        bytes[..32].copy_from_slice(&y);
        assert!(prepare(&k, b"m", &Signature::from_bytes(bytes)).is_none());
    }

    /// A signature whose `R` carries a small-order component: refused by cofactorless (and
    /// "strict") verification, accepted by the cofactored rule, and judged the same alone and
    /// in every batch, which is the point of the rule.
    #[test]
    fn torsion_in_r_is_judged_the_same_alone_and_in_any_batch() {
        use curve25519_dalek::constants::EIGHT_TORSION;
        let seed = [9u8; 32];
        let secret = SecretKey::from_seed(seed);
        let expanded: [u8; 64] = Sha512::digest(seed).into();
        let mut a_bytes = [0u8; 32];
        a_bytes.copy_from_slice(&expanded[..32]);
        let a = Scalar::from_bytes_mod_order(curve25519_dalek::scalar::clamp_integer(a_bytes));
        let public = (ED25519_BASEPOINT_POINT * a).compress().to_bytes();
        assert_eq!(&public, secret.public().as_bytes());
        let message = b"crafted by the key's holder";
        let r = Scalar::from(123_456_789u64);
        let big_r = ED25519_BASEPOINT_POINT * r + EIGHT_TORSION[1];
        let big_r_bytes = big_r.compress().to_bytes();
        let mut hasher = Sha512::new();
        hasher.update(big_r_bytes);
        hasher.update(public);
        hasher.update(message);
        let k = Scalar::from_bytes_mod_order_wide(&hasher.finalize().into());
        let s = r + k * a;
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(&big_r_bytes);
        bytes[32..].copy_from_slice(s.as_bytes());
        let crafted = Signature::from_bytes(bytes);

        let dalek_key = secret.public().verifying_key().expect("key");
        let dalek_sig = ed25519_dalek::Signature::from_bytes(&bytes);
        assert!(dalek_key.verify_strict(message, &dalek_sig).is_err());

        let key = Key::new(&secret.public()).expect("key");
        let odd = prepare(&key, message, &crafted).expect("well-formed");
        assert!(check_one(&odd));
        let honest: Vec<Prepared> = (0..6u8)
            .map(|i| {
                let (k, sig) = signed(&SecretKey::from_seed([i + 20; 32]), &[i]);
                prepare(&k, &[i], &sig).expect("well-formed")
            })
            .collect();
        for split in 0..honest.len() {
            let mut batch = honest[..split].to_vec();
            batch.push(odd);
            batch.extend_from_slice(&honest[split..]);
            assert!(check_batch(&batch));
        }
    }
}
