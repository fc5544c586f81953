//! The sequencer's check of many incoming signatures at once: a random linear combination of all
//! of them in one multi-pairing, and on failure a bisection that names exactly the bad ones.

use ark_bn254::{Fr, G1Affine, G1Projective, G2Affine};
use ark_ec::VariableBaseMSM;
use ark_ff::{PrimeField, Zero};
use rand::RngCore;
use rayon::prelude::*;

use super::pairing::{product_is_one, KeyCache};
use super::{message_point, neg_g2, PublicKey, Signature};

/// One signature to check: key, message, signature.
#[derive(Clone, Debug)]
pub struct SignedMessage {
    /// The signer's key.
    pub public_key: PublicKey,
    /// The message.
    pub message: Vec<u8>,
    /// The signature.
    pub signature: Signature,
}

struct Item {
    h: G1Affine,
    pk: G2Affine,
    sig: G1Affine,
}

/// True when `Σ r_i·sig_i` pairs with `g2` as `Π e(r_i·H(m_i), pk_i)`, for fresh random 128-bit
/// `r_i`: a forged signature passes with probability 2^-128. The products under one key are
/// summed before their one Miller loop (`pairing::product_is_one`).
fn combination_holds(items: &[&Item], keys: &KeyCache, rng: &mut dyn RngCore) -> bool {
    let r: Vec<Fr> = items
        .iter()
        .map(|_| {
            let mut b = [0u8; 16];
            rng.fill_bytes(&mut b);
            Fr::from_le_bytes_mod_order(&b)
        })
        .collect();
    let sigs: Vec<G1Affine> = items.iter().map(|p| p.sig).collect();
    let agg: G1Projective = G1Projective::msm(&sigs, &r).unwrap_or_else(|_| G1Projective::zero());
    let mut terms: Vec<(G1Projective, G2Affine)> =
        items.par_iter().zip(r.par_iter()).map(|(p, r)| (p.h * r, p.pk)).collect();
    terms.push((agg, neg_g2()));
    product_is_one(&terms, keys)
}

fn bisect(items: &[(usize, &Item)], keys: &KeyCache, rng: &mut dyn RngCore, bad: &mut Vec<usize>) {
    let refs: Vec<&Item> = items.iter().map(|(_, p)| *p).collect();
    if combination_holds(&refs, keys, rng) {
        return;
    }
    if items.len() == 1 {
        bad.push(items[0].0);
        return;
    }
    let (left, right) = items.split_at(items.len() / 2);
    bisect(left, keys, rng, bad);
    bisect(right, keys, rng, bad);
}

/// Indices of the signatures that do not verify, in order (empty when all do). One combined
/// check when all are good; with `k` bad ones, about `2k·log2(n)` smaller checks. Keys are
/// prepared through `keys`.
pub fn find_invalid(items: &[SignedMessage], keys: &KeyCache, rng: &mut dyn RngCore) -> Vec<usize> {
    let prepared: Vec<Item> = items
        .par_iter()
        .map(|s| Item { h: message_point(&s.message), pk: s.public_key.0, sig: s.signature.0 })
        .collect();
    let indexed: Vec<(usize, &Item)> = prepared.iter().enumerate().collect();
    let mut bad = Vec::new();
    if !indexed.is_empty() {
        bisect(&indexed, keys, rng, &mut bad);
    }
    bad.sort_unstable();
    bad
}
