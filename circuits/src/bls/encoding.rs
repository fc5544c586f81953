//! Point encodings. Uncompressed as Ethereum's BN254 precompiles take them (EIP-196/197):
//! big-endian 32-byte coordinates, G2 coordinates with the imaginary part first, the identity as
//! all zeros. Compressed as arkworks' canonical compressed form, for storage. Every decoded point
//! is checked: canonical coordinates, on the curve, in the prime-order subgroup, not the identity.

use ark_bn254::{Fq, Fq2, G1Affine, G2Affine};
use ark_ec::AffineRepr;
use ark_ff::{BigInteger, PrimeField};
use ark_serialize::{CanonicalDeserialize, CanonicalSerialize, Compress, Validate};

use super::BlsError;

/// Bytes of an uncompressed G1 point.
pub const G1_LEN: usize = 64;
/// Bytes of an uncompressed G2 point.
pub const G2_LEN: usize = 128;
/// Bytes of a compressed G1 point.
pub const G1_COMPRESSED_LEN: usize = 32;
/// Bytes of a compressed G2 point.
pub const G2_COMPRESSED_LEN: usize = 64;

fn fq_to_bytes(x: &Fq, out: &mut [u8]) {
    out.copy_from_slice(&x.into_bigint().to_bytes_be());
}

fn fq_from_bytes(b: &[u8]) -> Result<Fq, BlsError> {
    let x = Fq::from_be_bytes_mod_order(b);
    // Canonical only: the value must be below the modulus.
    if x.into_bigint().to_bytes_be() != b {
        return Err(BlsError::NonCanonicalCoordinate);
    }
    Ok(x)
}

fn check_len(b: &[u8], expected: usize) -> Result<(), BlsError> {
    if b.len() != expected {
        return Err(BlsError::Length { expected, got: b.len() });
    }
    Ok(())
}

/// EIP-196 bytes of a G1 point.
pub fn g1_to_bytes(p: &G1Affine) -> [u8; G1_LEN] {
    let mut out = [0u8; G1_LEN];
    if !p.is_zero() {
        fq_to_bytes(&p.x, &mut out[..32]);
        fq_to_bytes(&p.y, &mut out[32..]);
    }
    out
}

/// EIP-197 bytes of a G2 point: `x.c1 ‖ x.c0 ‖ y.c1 ‖ y.c0`.
pub fn g2_to_bytes(p: &G2Affine) -> [u8; G2_LEN] {
    let mut out = [0u8; G2_LEN];
    if !p.is_zero() {
        fq_to_bytes(&p.x.c1, &mut out[..32]);
        fq_to_bytes(&p.x.c0, &mut out[32..64]);
        fq_to_bytes(&p.y.c1, &mut out[64..96]);
        fq_to_bytes(&p.y.c0, &mut out[96..]);
    }
    out
}

/// A G1 point from EIP-196 bytes: canonical, on the curve, not the identity (G1's cofactor is 1,
/// so every curve point is in the subgroup).
pub fn g1_from_bytes(b: &[u8]) -> Result<G1Affine, BlsError> {
    check_len(b, G1_LEN)?;
    if b.iter().all(|&x| x == 0) {
        return Err(BlsError::Identity);
    }
    let p = G1Affine::new_unchecked(fq_from_bytes(&b[..32])?, fq_from_bytes(&b[32..])?);
    if !p.is_on_curve() {
        return Err(BlsError::NotOnCurve);
    }
    Ok(p)
}

/// A G2 point from EIP-197 bytes: canonical, on the twist, in the prime-order subgroup (checked
/// explicitly: the twist's cofactor is not 1), not the identity.
pub fn g2_from_bytes(b: &[u8]) -> Result<G2Affine, BlsError> {
    let p = g2_on_curve_from_bytes(b)?;
    if !p.is_in_correct_subgroup_assuming_on_curve() {
        return Err(BlsError::NotInSubgroup);
    }
    Ok(p)
}

/// [`g2_from_bytes`] without the subgroup check, which is most of its cost (90 µs of 91 on the
/// 2-vCPU dev machine): canonical coordinates, not the identity, on the curve.
pub fn g2_on_curve_from_bytes(b: &[u8]) -> Result<G2Affine, BlsError> {
    check_len(b, G2_LEN)?;
    if b.iter().all(|&x| x == 0) {
        return Err(BlsError::Identity);
    }
    let x = Fq2::new(fq_from_bytes(&b[32..64])?, fq_from_bytes(&b[..32])?);
    let y = Fq2::new(fq_from_bytes(&b[96..])?, fq_from_bytes(&b[64..96])?);
    let p = G2Affine::new_unchecked(x, y);
    if !p.is_on_curve() {
        return Err(BlsError::NotOnCurve);
    }
    Ok(p)
}

fn compressed<T: CanonicalSerialize>(p: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.serialized_size(Compress::Yes));
    // Writing into a Vec cannot fail.
    let _ = p.serialize_compressed(&mut out);
    out
}

fn from_compressed<T: CanonicalDeserialize + AffineRepr>(b: &[u8], len: usize) -> Result<T, BlsError> {
    check_len(b, len)?;
    let p = T::deserialize_with_mode(b, Compress::Yes, Validate::Yes).map_err(|e| match e {
        ark_serialize::SerializationError::InvalidData => BlsError::NotInSubgroup,
        other => BlsError::Compressed(other.to_string()),
    })?;
    if p.is_zero() {
        return Err(BlsError::Identity);
    }
    Ok(p)
}

/// Compressed G1 (32 bytes).
pub fn g1_to_compressed(p: &G1Affine) -> Vec<u8> {
    compressed(p)
}

/// Compressed G2 (64 bytes).
pub fn g2_to_compressed(p: &G2Affine) -> Vec<u8> {
    compressed(p)
}

/// A G1 point from its compressed form, validated.
pub fn g1_from_compressed(b: &[u8]) -> Result<G1Affine, BlsError> {
    from_compressed(b, G1_COMPRESSED_LEN)
}

/// A G2 point from its compressed form, validated (subgroup included).
pub fn g2_from_compressed(b: &[u8]) -> Result<G2Affine, BlsError> {
    from_compressed(b, G2_COMPRESSED_LEN)
}
