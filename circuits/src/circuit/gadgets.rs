//! Circuit gadgets: 64-bit amounts in 32-bit limbs, Merkle paths and updates, selections.

use plonky2::field::types::Field;
use plonky2::hash::hash_types::{HashOutTarget, NUM_HASH_OUT_ELTS};
use plonky2::hash::hashing::PlonkyPermutation;
use plonky2::hash::poseidon::{PoseidonHash, PoseidonPermutation};
use plonky2::iop::target::{BoolTarget, Target};
use plonky2::plonk::circuit_builder::CircuitBuilder;
use plonky2::plonk::config::AlgebraicHasher;

use super::generators::{CarryGenerator, InverseGenerator};
use prover_gpu::gates::RangeCheckGate;

use crate::hash::F;
use crate::swap::CARRY_BITS;

/// The builder of every circuit of this crate.
pub type Builder = CircuitBuilder<F, 2>;

/// 2^32 as a field element.
pub fn two_32() -> F {
    F::from_canonical_u64(1 << 32)
}

/// A u64 as two 32-bit limbs.
#[derive(Clone, Copy, Debug)]
pub struct U64Target {
    /// Low 32 bits.
    pub lo: Target,
    /// High 32 bits.
    pub hi: Target,
}

impl U64Target {
    /// Two fresh virtual limbs (not range-checked).
    pub fn virtual_(b: &mut Builder) -> Self {
        Self { lo: b.add_virtual_target(), hi: b.add_virtual_target() }
    }

    /// Range-checks both limbs to 32 bits.
    pub fn range_check(self, b: &mut Builder) {
        range_check(b, self.lo, 32);
        range_check(b, self.hi, 32);
    }

    /// `lo + hi`, which is zero exactly when the amount is zero.
    pub fn zero_test_value(self, b: &mut Builder) -> Target {
        b.add(self.lo, self.hi)
    }
}

/// The range-check gates the slots use: a width and the values a row of it holds. Every
/// constraint of every gate type is evaluated at every point of every proof's quotient, batch and
/// merge alike, so a row holds about as many values as a slot checks, not as many as its wires
/// allow (docs/circuit.md: a slot checks 29 values of 32 bits, 12 of 16, 2 of 14 and 7 carries).
pub const RANGE_GATES: [(usize, usize); 3] = [(16, 7), (32, 7), (CARRY_BITS, 4)];

/// Asserts `x < 2^bits`: in a row of [`RANGE_GATES`] of that width; below 16 bits as `x` and
/// `x·2^(16 − bits)` both below 2^16 (the product cannot wrap, so it bounds `x`); any other width
/// (the batch's one 17-bit fee carry) in a row of plonky2's `BaseSumGate`, which the circuit has
/// anyway for its index bits, rather than in a gate type of its own.
pub fn range_check(b: &mut Builder, x: Target, bits: usize) {
    if let Some(&(bits, ops)) = RANGE_GATES.iter().find(|(w, _)| *w == bits) {
        prover_gpu::gates::range_check(b, x, RangeCheckGate::new(bits, ops));
    } else if bits < 16 {
        range_check(b, x, 16);
        let scaled = b.mul_const(F::from_canonical_u64(1 << (16 - bits)), x);
        range_check(b, scaled, 16);
    } else {
        b.range_check(x, bits);
    }
}

/// `cond ? x : y` for any `cond` (not only booleans): `cond·(x − y) + y`.
pub fn select(b: &mut Builder, cond: Target, x: Target, y: Target) -> Target {
    let diff = b.sub(x, y);
    b.mul_add(cond, diff, y)
}

/// `cond ? x : y` limb-wise.
pub fn select_u64(b: &mut Builder, cond: Target, x: U64Target, y: U64Target) -> U64Target {
    U64Target { lo: select(b, cond, x.lo, y.lo), hi: select(b, cond, x.hi, y.hi) }
}

/// `cond ? x : y` element-wise.
pub fn select_hash(b: &mut Builder, cond: Target, x: HashOutTarget, y: HashOutTarget) -> HashOutTarget {
    HashOutTarget { elements: std::array::from_fn(|i| select(b, cond, x.elements[i], y.elements[i])) }
}

/// `cond ? x : y` element-wise over slices.
pub fn select_vec(b: &mut Builder, cond: Target, x: &[Target], y: &[Target]) -> Vec<Target> {
    x.iter().zip(y).map(|(&x, &y)| select(b, cond, x, y)).collect()
}

/// Asserts `cond · x = 0`.
pub fn assert_zero_if(b: &mut Builder, cond: Target, x: Target) {
    let p = b.mul(cond, x);
    b.assert_zero(p);
}

/// Asserts `x = y` when `cond` is 1.
pub fn assert_hash_eq_if(b: &mut Builder, cond: Target, x: HashOutTarget, y: HashOutTarget) {
    for i in 0..NUM_HASH_OUT_ELTS {
        b.conditional_assert_eq(cond, x.elements[i], y.elements[i]);
    }
}

/// `x + y` (or `x − y`), asserting the result is a u64: no overflow, no underflow.
pub fn u64_checked(b: &mut Builder, x: U64Target, y: U64Target, subtract: bool) -> U64Target {
    let out = u64_unchecked(b, x, y, subtract);
    out.range_check(b);
    out
}

/// `x + y` (or `x − y`) in limbs with a boolean carry, the limbs not range-checked: only as an
/// intermediate that a [`u64_checked`] step in the same direction then bounds. Its limbs are
/// the integer limbs' sums and differences with the carries, so the checked result's limbs
/// (below 2^32 each, and far below the field's order) are the integer result's: `x − y − z`
/// checked as a u64 holds both `x ≥ y` and `x − y ≥ z`.
pub fn u64_unchecked(b: &mut Builder, x: U64Target, y: U64Target, subtract: bool) -> U64Target {
    let carry = b.add_virtual_bool_target_safe().target;
    b.add_simple_generator(CarryGenerator { x: x.lo, y: y.lo, carry, subtract });
    let base = two_32();
    let (lo, hi) = if subtract {
        // lo = x.lo − y.lo + carry·2^32, hi = x.hi − y.hi − carry
        let d = b.sub(x.lo, y.lo);
        let lo = b.mul_const_add(base, carry, d);
        let d = b.sub(x.hi, y.hi);
        (lo, b.sub(d, carry))
    } else {
        // lo = x.lo + y.lo − carry·2^32, hi = x.hi + y.hi + carry
        let s = b.add(x.lo, y.lo);
        let lo = b.mul_const_add(-base, carry, s);
        let s = b.add(x.hi, y.hi);
        (lo, b.add(s, carry))
    };
    U64Target { lo, hi }
}

/// `x·s` limb-wise, for `s` a bit: `x` or zero.
pub fn u64_scaled(b: &mut Builder, x: U64Target, s: Target) -> U64Target {
    U64Target { lo: b.mul(x.lo, s), hi: b.mul(x.hi, s) }
}

/// 1 when `x` is zero, else 0: `z = 1 − x·inv` with `x·z = 0` (an inverse the prover supplies).
pub fn is_zero(b: &mut Builder, x: Target) -> Target {
    let inv = b.add_virtual_target();
    b.add_simple_generator(InverseGenerator { x, inv });
    let one = b.one();
    let z = b.arithmetic(-F::ONE, F::ONE, x, inv, one);
    let p = b.mul(x, z);
    b.assert_zero(p);
    z
}

/// Fresh virtual digests.
pub fn virtual_path(b: &mut Builder, depth: usize) -> Vec<HashOutTarget> {
    (0..depth).map(|_| b.add_virtual_hash()).collect()
}

/// Root of the tree whose leaf at the index given by `bits` (little-endian) is `leaf`, with
/// siblings `path`: one Poseidon row per level, the swap wire ordering the children.
pub fn merkle_root(b: &mut Builder, leaf: HashOutTarget, bits: &[BoolTarget], path: &[HashOutTarget]) -> HashOutTarget {
    debug_assert_eq!(bits.len(), path.len());
    let zero = b.zero();
    let mut node = leaf;
    for (&bit, sibling) in bits.iter().zip(path) {
        let mut state = PoseidonPermutation::new(std::iter::repeat(zero));
        state.set_from_slice(&node.elements, 0);
        state.set_from_slice(&sibling.elements, NUM_HASH_OUT_ELTS);
        let out = <PoseidonHash as AlgebraicHasher<F>>::permute_swapped(state, bit, b);
        node = HashOutTarget { elements: std::array::from_fn(|i| out.squeeze()[i]) };
    }
    node
}

/// Replaces `old_leaf` by `new_leaf` under `root_in` when `enabled`: checks the old leaf's path
/// against `root_in` and returns the new root; when disabled, returns `root_in` unchanged.
pub fn merkle_update(
    b: &mut Builder,
    enabled: Target,
    root_in: HashOutTarget,
    bits: &[BoolTarget],
    path: &[HashOutTarget],
    old_leaf: HashOutTarget,
    new_leaf: HashOutTarget,
) -> HashOutTarget {
    let old_root = merkle_root(b, old_leaf, bits, path);
    assert_hash_eq_if(b, enabled, old_root, root_in);
    let new_root = merkle_root(b, new_leaf, bits, path);
    select_hash(b, enabled, new_root, root_in)
}

/// A balance leaf `[lo, hi, 0, 0]`.
pub fn balance_leaf(b: &mut Builder, v: U64Target) -> HashOutTarget {
    let zero = b.zero();
    HashOutTarget { elements: [v.lo, v.hi, zero, zero] }
}

/// `hash_no_pad` of the given elements.
pub fn hash(b: &mut Builder, inputs: Vec<Target>) -> HashOutTarget {
    b.hash_n_to_hash_no_pad::<PoseidonHash>(inputs)
}

/// Index bits that are all constant zero (the operator account, the fee token).
pub fn zero_bits(b: &mut Builder, n: usize) -> Vec<BoolTarget> {
    let f = b._false();
    vec![f; n]
}

#[cfg(test)]
mod tests {
    use plonky2::field::types::PrimeField64;
    use plonky2::iop::witness::{PartialWitness, WitnessWrite};
    use plonky2::plonk::circuit_data::CircuitConfig;
    use prover_gpu::{prove, RayonBackend};

    use super::*;

    /// Proves `x < 2^bits` for `value` through `range_check`: whether it proves, and plonky2's
    /// verifier accepts the proof when it does.
    fn proves(bits: usize, value: u64) -> bool {
        let mut b = Builder::new(CircuitConfig::standard_recursion_config());
        let x = b.add_virtual_target();
        range_check(&mut b, x, bits);
        b.register_public_input(x);
        let data = b.build::<crate::circuit::Config>();
        let mut pw = PartialWitness::new();
        pw.set_target(x, F::from_canonical_u64(value)).expect("set");
        match prove(&RayonBackend, &data.prover_only, &data.common, pw) {
            Ok(proof) => {
                data.verify(proof).expect("plonky2 verifies it");
                true
            }
            Err(_) => false,
        }
    }

    /// Every path of `range_check`: a gate's width (16, 32, 36), a width folded into the 16-bit
    /// gate (3, 14), plonky2's gate (17): the largest value proves, the bound does not. Folded
    /// widths also refuse a value below 2^16 but not below the bound, and one whose scaled copy
    /// is small only because the product wrapped (1/2^(16 − bits)), so each of their two checks
    /// is needed.
    #[test]
    fn each_width_holds_exactly_below_its_bound() {
        for bits in [3, 14, 16, 17, 32, CARRY_BITS] {
            assert!(proves(bits, (1 << bits) - 1), "{bits} bits: the largest value");
            assert!(proves(bits, 0), "{bits} bits: zero");
            assert!(!proves(bits, 1 << bits), "{bits} bits: the bound");
            if bits < 16 {
                assert!(!proves(bits, (1 << 16) - 1), "{bits} bits: 2^16 − 1");
                let wraps = F::from_canonical_u64(1 << (16 - bits)).inverse().to_canonical_u64();
                assert!(!proves(bits, wraps), "{bits} bits: a scaled copy of 1");
            }
        }
    }
}
