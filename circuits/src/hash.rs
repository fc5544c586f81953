//! Poseidon hashing of the rollup's state: leaf formats and empty-subtree digests.
//!
//! Every digest is plonky2's `PoseidonHash` over Goldilocks, so the native state and the circuit
//! compute bit-identical values.

use std::sync::OnceLock;

use plonky2::field::goldilocks_field::GoldilocksField;
use plonky2::field::types::{Field, PrimeField64};
use plonky2::hash::hash_types::HashOut;
use plonky2::hash::poseidon::PoseidonHash;
use plonky2::plonk::config::Hasher;

/// The base field of every proof and digest.
pub type F = GoldilocksField;
/// A Poseidon digest: four Goldilocks elements.
pub type Digest = HashOut<F>;

/// Depth of the account tree: 2^24 accounts.
pub const ACCOUNT_DEPTH: usize = 24;
/// Depth of each account's token-balance tree: 2^10 tokens.
pub const TOKEN_DEPTH: usize = 10;
/// Depth of the pool tree: 2^24 pools (it shares the account tree's update gadget).
pub const POOL_DEPTH: usize = 24;

/// The all-zero digest: the value of an empty leaf in every tree.
pub const ZERO_DIGEST: Digest = HashOut { elements: [F::ZERO; 4] };

/// Hashes two children into their parent (`PoseidonHash::two_to_one`).
pub fn hash_pair(left: Digest, right: Digest) -> Digest {
    PoseidonHash::two_to_one(left, right)
}

/// Poseidon sponge without padding, as the circuit's `hash_n_to_hash_no_pad`.
pub fn hash_elements(elements: &[F]) -> Digest {
    PoseidonHash::hash_no_pad(elements)
}

/// Digests of empty subtrees: `empty_subtree(0)` is an empty leaf, `empty_subtree(h)` the root
/// of an empty tree of height `h`.
pub fn empty_subtree(height: usize) -> Digest {
    static TABLE: OnceLock<Vec<Digest>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = vec![ZERO_DIGEST];
        for h in 0..ACCOUNT_DEPTH.max(POOL_DEPTH) {
            t.push(hash_pair(t[h], t[h]));
        }
        t
    });
    table[height]
}

/// Root of an empty token-balance tree: the balance root of a freshly registered account.
pub fn empty_balance_root() -> Digest {
    empty_subtree(TOKEN_DEPTH)
}

/// The two 32-bit limbs `[lo, hi]` of a u64, as the circuit holds amounts.
pub fn u64_limbs(x: u64) -> [F; 2] {
    [F::from_canonical_u64(x & 0xffff_ffff), F::from_canonical_u64(x >> 32)]
}

/// A balance leaf is the amount's limbs themselves, `[lo, hi, 0, 0]`: no hash is needed at a
/// fixed depth, and a zero balance is the empty leaf.
pub fn balance_leaf(amount: u64) -> Digest {
    let [lo, hi] = u64_limbs(amount);
    HashOut { elements: [lo, hi, F::ZERO, F::ZERO] }
}

/// Elements hashed into an account leaf.
pub const ACCOUNT_LEAF_ELEMENTS: usize = 11;

/// The eleven elements hashed into an account leaf: public-key hash, nonce, the fee token's
/// balance in 32-bit limbs, balance root. Eleven elements take two permutations, as nine did.
pub fn account_leaf_inputs(
    pubkey_hash: Digest,
    nonce: u32,
    fee_balance: u64,
    balance_root: Digest,
) -> [F; ACCOUNT_LEAF_ELEMENTS] {
    let mut v = [F::ZERO; ACCOUNT_LEAF_ELEMENTS];
    v[..4].copy_from_slice(&pubkey_hash.elements);
    v[4] = F::from_canonical_u32(nonce);
    v[5..7].copy_from_slice(&u64_limbs(fee_balance));
    v[7..].copy_from_slice(&balance_root.elements);
    v
}

/// An account leaf: `hash_no_pad(pubkey_hash ‖ nonce ‖ fee_lo ‖ fee_hi ‖ balance_root)`.
pub fn account_leaf(pubkey_hash: Digest, nonce: u32, fee_balance: u64, balance_root: Digest) -> Digest {
    hash_elements(&account_leaf_inputs(pubkey_hash, nonce, fee_balance, balance_root))
}

/// Hash of a BLS public key's bytes: the bytes packed big-endian into 32-bit words (the last word
/// zero-padded), then `hash_no_pad`.
pub fn pubkey_hash(pubkey: &[u8]) -> Digest {
    let words: Vec<F> = pubkey
        .chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            F::from_canonical_u32(u32::from_be_bytes(w))
        })
        .collect();
    hash_elements(&words)
}

/// A digest as 32 bytes: each element's canonical value, little-endian, in order.
pub fn digest_to_bytes(d: &Digest) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, e) in d.elements.iter().enumerate() {
        out[i * 8..i * 8 + 8].copy_from_slice(&e.to_canonical_u64().to_le_bytes());
    }
    out
}

/// Hex of [`digest_to_bytes`].
pub fn digest_hex(d: &Digest) -> String {
    digest_to_bytes(d).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_subtrees_chain() {
        assert_eq!(empty_subtree(0), ZERO_DIGEST);
        for h in 0..ACCOUNT_DEPTH {
            assert_eq!(empty_subtree(h + 1), hash_pair(empty_subtree(h), empty_subtree(h)));
        }
    }

    #[test]
    fn balance_leaf_of_zero_is_empty() {
        assert_eq!(balance_leaf(0), ZERO_DIGEST);
        assert_eq!(balance_leaf(u64::MAX).elements[0], F::from_canonical_u64(0xffff_ffff));
    }
}
