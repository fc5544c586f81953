//! BLS signatures on BN254: public keys in G2, signatures in G1 (DESIGN.md decision 7).
//!
//! A signature on `msg` is `sk·H(msg)` with `H` the hash to G1 of [`hash_to_curve`] under
//! [`SIG_DST`]; it verifies when `e(sig, g2) = e(H(msg), pk)`. A transaction's signed message is
//! the 32 bytes of its message hash (`Tx::message_hash`, see `docs/bls.md`). Rogue-key attacks on
//! aggregates are stopped by a proof of possession, a signature on the key's own bytes under
//! [`POP_DST`], carried by `Register` and checked before a key is accepted.

pub mod batch;
pub mod encoding;
pub mod hash_to_curve;
pub mod pairing;
pub mod signed;

use ark_bn254::{Fr, G1Affine, G1Projective, G2Affine};
use ark_ec::{AffineRepr, CurveGroup, PrimeGroup};
use ark_ff::{BigInteger, PrimeField, UniformRand, Zero};
use rayon::prelude::*;
use thiserror::Error;

pub use encoding::{G1_LEN, G2_LEN};
pub use pairing::KeyCache;
pub use signed::{SignedTx, SignedTxError};

use crate::hash::digest_to_bytes;
use crate::tx::{Register, Tx};

/// Domain separation tag of transaction signatures.
pub const SIG_DST: &[u8] = b"ROLLUP-V1-BLS-SIG-BN254G1_XMD:SHA-256_SVDW_RO_";
/// Domain separation tag of proofs of possession.
pub const POP_DST: &[u8] = b"ROLLUP-V1-BLS-POP-BN254G1_XMD:SHA-256_SVDW_RO_";
/// Domain separation tag of seed-derived secret keys.
pub const KEYGEN_DST: &[u8] = b"ROLLUP-V1-BLS-KEYGEN-BN254";

/// Why a key, a point or a signature was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum BlsError {
    /// Wrong number of bytes.
    #[error("expected {expected} bytes, got {got}")]
    Length {
        /// Bytes expected.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// A coordinate is not below the field modulus.
    #[error("coordinate is not a canonical field element")]
    NonCanonicalCoordinate,
    /// The point is not on the curve.
    #[error("point is not on the curve")]
    NotOnCurve,
    /// The point is on the curve but outside the prime-order subgroup.
    #[error("point is not in the prime-order subgroup")]
    NotInSubgroup,
    /// The point at infinity where a key or signature is required.
    #[error("point is the identity")]
    Identity,
    /// A compressed encoding that does not decode.
    #[error("bad compressed point: {0}")]
    Compressed(String),
    /// A secret key that is zero or not below the group order.
    #[error("invalid secret key")]
    InvalidSecretKey,
    /// The pairing check failed.
    #[error("signature does not verify")]
    InvalidSignature,
    /// The proof of possession does not verify.
    #[error("proof of possession does not verify")]
    InvalidProofOfPossession,
    /// Aggregate verification was given no signers.
    #[error("nothing to verify")]
    Empty,
}

/// A secret key: a non-zero scalar.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(Fr);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// A public key in G2, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicKey(pub G2Affine);

/// A signature in G1, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature(pub G1Affine);

impl SecretKey {
    /// A random key.
    pub fn random<R: rand::Rng + ?Sized>(rng: &mut R) -> Self {
        loop {
            let s = Fr::rand(rng);
            if !s.is_zero() {
                return SecretKey(s);
            }
        }
    }

    /// The key derived from a seed: 48 bytes of `expand_message_xmd(seed ‖ counter)` under
    /// [`KEYGEN_DST`], reduced modulo the group order (the counter moves on in the negligible case
    /// of zero). `rollup keygen --seed devnet-3` recreates devnet account 3's key.
    pub fn from_seed(seed: &[u8]) -> Self {
        for counter in 0u8.. {
            let input = [seed, &[counter]].concat();
            let bytes = hash_to_curve::expand_message_xmd(&input, KEYGEN_DST, 48);
            let s = Fr::from_be_bytes_mod_order(&bytes);
            if !s.is_zero() {
                return SecretKey(s);
            }
        }
        unreachable!("a non-zero scalar is found with overwhelming probability")
    }

    /// Big-endian 32 bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.0.into_bigint().to_bytes_be());
        out
    }

    /// From big-endian 32 bytes: below the group order and non-zero.
    pub fn from_bytes(b: &[u8]) -> Result<Self, BlsError> {
        if b.len() != 32 {
            return Err(BlsError::Length { expected: 32, got: b.len() });
        }
        let s = Fr::from_be_bytes_mod_order(b);
        if s.is_zero() || s.into_bigint().to_bytes_be() != b {
            return Err(BlsError::InvalidSecretKey);
        }
        Ok(SecretKey(s))
    }

    /// `sk·g2`.
    pub fn public_key(&self) -> PublicKey {
        PublicKey((ark_bn254::G2Projective::generator() * self.0).into_affine())
    }

    /// Signs `msg` under [`SIG_DST`].
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature((message_point(msg) * self.0).into_affine())
    }

    /// Signs a transaction's message hash.
    pub fn sign_tx(&self, tx: &Tx) -> Signature {
        self.sign(&tx_message(tx))
    }

    /// The proof of possession of this key: a signature on its public key's EIP-197 bytes under
    /// [`POP_DST`].
    pub fn proof_of_possession(&self) -> Signature {
        let pk = self.public_key().to_bytes();
        Signature((hash_to_curve::hash_to_g1(&pk, POP_DST) * self.0).into_affine())
    }
}

/// The 32 bytes a transaction's signature signs: its message hash.
pub fn tx_message(tx: &Tx) -> [u8; 32] {
    digest_to_bytes(&tx.message_hash())
}

/// `H(msg)`: the message's point in G1 under [`SIG_DST`].
pub fn message_point(msg: &[u8]) -> G1Affine {
    hash_to_curve::hash_to_g1(msg, SIG_DST)
}

impl PublicKey {
    /// EIP-197 bytes.
    pub fn to_bytes(&self) -> [u8; G2_LEN] {
        encoding::g2_to_bytes(&self.0)
    }

    /// From EIP-197 bytes, validated.
    pub fn from_bytes(b: &[u8]) -> Result<Self, BlsError> {
        encoding::g2_from_bytes(b).map(PublicKey)
    }

    /// From EIP-197 bytes that this program stored after validating them ([`PublicKey::from_bytes`]
    /// or [`register_key`] on the way in): checked as [`PublicKey::from_bytes`] checks, less
    /// the subgroup check, most of its cost (90 µs of 91 on the 2-vCPU dev machine, `cargo bench
    /// -p benches --bench bls -- public_key`).
    /// A record damaged off the curve is still refused; nothing from a peer may come this way.
    pub fn from_stored_bytes(b: &[u8]) -> Result<Self, BlsError> {
        encoding::g2_on_curve_from_bytes(b).map(PublicKey)
    }
}

impl Signature {
    /// EIP-196 bytes.
    pub fn to_bytes(&self) -> [u8; G1_LEN] {
        encoding::g1_to_bytes(&self.0)
    }

    /// From EIP-196 bytes, validated.
    pub fn from_bytes(b: &[u8]) -> Result<Self, BlsError> {
        encoding::g1_from_bytes(b).map(Signature)
    }
}

/// `−g2` (computed once, with its line coefficients: `pairing::neg_g2_prepared`).
pub(crate) fn neg_g2() -> G2Affine {
    pairing::neg_g2_prepared().0
}

/// Whether `sig` signs the point `h` under `pk`: `e(sig, −g2)·e(h, pk) = 1`.
fn signs(pk: &PublicKey, h: G1Affine, sig: &Signature) -> bool {
    pairing::product_is_one(&[(sig.0.into_group(), neg_g2()), (h.into_group(), pk.0)], &KeyCache::new(0))
}

/// Checks one signature.
pub fn verify(pk: &PublicKey, msg: &[u8], sig: &Signature) -> Result<(), BlsError> {
    if signs(pk, message_point(msg), sig) {
        Ok(())
    } else {
        Err(BlsError::InvalidSignature)
    }
}

/// Checks a transaction's signature.
pub fn verify_tx(pk: &PublicKey, tx: &Tx, sig: &Signature) -> Result<(), BlsError> {
    verify(pk, &tx_message(tx), sig)
}

/// Checks a proof of possession.
pub fn verify_pop(pk: &PublicKey, pop: &Signature) -> Result<(), BlsError> {
    let h = hash_to_curve::hash_to_g1(&pk.to_bytes(), POP_DST);
    if signs(pk, h, pop) {
        Ok(())
    } else {
        Err(BlsError::InvalidProofOfPossession)
    }
}

/// The key a `Register` carries, validated, with its proof of possession checked.
pub fn register_key(r: &Register) -> Result<PublicKey, BlsError> {
    let pk = PublicKey::from_bytes(&r.pubkey)?;
    let pop = Signature::from_bytes(&r.pop).map_err(|_| BlsError::InvalidProofOfPossession)?;
    verify_pop(&pk, &pop)?;
    Ok(pk)
}

/// The sum of signatures.
pub fn aggregate(sigs: &[Signature]) -> Signature {
    let sum: G1Projective = sigs.iter().map(|s| s.0.into_group()).sum();
    Signature(sum.into_affine())
}

/// Checks an aggregate of signatures by `signers[i].0` on `signers[i].1`: one multi-pairing
/// `e(agg, −g2) · Π e(H(m_i), pk_i) = 1`, one Miller loop per distinct key (a key's messages'
/// points summed first), keys prepared through `keys`. Keys must have passed their proof of
/// possession, which is what makes repeated messages safe too.
pub fn aggregate_verify(signers: &[(PublicKey, &[u8])], agg: &Signature, keys: &KeyCache) -> Result<(), BlsError> {
    if signers.is_empty() {
        return Err(BlsError::Empty);
    }
    let mut terms: Vec<(G1Projective, G2Affine)> =
        signers.par_iter().map(|(pk, msg)| (message_point(msg).into_group(), pk.0)).collect();
    terms.push((agg.0.into_group(), neg_g2()));
    if pairing::product_is_one(&terms, keys) {
        Ok(())
    } else {
        Err(BlsError::InvalidSignature)
    }
}
