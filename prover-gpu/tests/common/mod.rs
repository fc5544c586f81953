//! Circuit helpers shared by the whole-proof tests.

use plonky2::field::types::Sample;
use plonky2::hash::poseidon::PoseidonHash;
use plonky2::iop::target::Target;
use plonky2::iop::witness::{PartialWitness, WitnessWrite};
use plonky2::plonk::circuit_builder::CircuitBuilder;
use plonky2::plonk::circuit_data::{CircuitConfig, CircuitData};
use prover_gpu::{Config, F};
use rand::rngs::StdRng;
use rand::SeedableRng;

pub const D: usize = 2;

/// Seeded random values for `targets`.
pub fn witness(targets: &[Target], seed: u64) -> PartialWitness<F> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut pw = PartialWitness::new();
    for t in targets {
        pw.set_target(*t, F::sample(&mut rng)).expect("set");
    }
    pw
}

/// A new builder of the standard recursion config with four input targets hashed `hashes` times
/// in a chain of Poseidon gates, the last digest registered as the public inputs.
pub fn hashed_inputs(hashes: usize) -> (CircuitBuilder<F, D>, Vec<Target>) {
    let mut b = CircuitBuilder::<F, D>::new(CircuitConfig::standard_recursion_config());
    let inputs = b.add_virtual_targets(4);
    let mut h = b.hash_n_to_hash_no_pad::<PoseidonHash>(inputs.clone());
    for _ in 1..hashes {
        h = b.hash_n_to_hash_no_pad::<PoseidonHash>(h.elements.to_vec());
    }
    b.register_public_inputs(&h.elements);
    (b, inputs)
}

/// A circuit that verifies a (stock) proof of `inner` from `inner_witness`, with whatever
/// `extra` adds to it, and the witness that proves it.
pub fn verifier_of(
    inner: &CircuitData<F, Config, D>,
    inner_witness: PartialWitness<F>,
    extra: impl FnOnce(&mut CircuitBuilder<F, D>),
) -> (CircuitData<F, Config, D>, PartialWitness<F>) {
    let inner_proof = inner.prove(inner_witness).expect("inner");
    let mut b = CircuitBuilder::<F, D>::new(CircuitConfig::standard_recursion_config());
    let pt = b.add_virtual_proof_with_pis(&inner.common);
    let vd = b.add_virtual_verifier_data(inner.common.config.fri_config.cap_height);
    b.verify_proof::<Config>(&pt, &vd, &inner.common);
    b.register_public_inputs(&pt.public_inputs);
    extra(&mut b);
    let outer = b.build::<Config>();
    let mut pw = PartialWitness::new();
    pw.set_proof_with_pis_target(&pt, &inner_proof).expect("proof");
    pw.set_verifier_data_target(&vd, &inner.verifier_only).expect("vd");
    (outer, pw)
}
