//! The two recursion circuits: `wrap` verifies one batch proof, `merge` verifies two children
//! that are each a wrap or a merge proof (cyclic recursion), so that every block proof, whatever
//! the number of batches, is a `merge` proof against one verifier key.
//!
//! Both have the same public inputs: the 16 of a batch (`old_root, new_root, c_in, c_out`), then
//! the verifier data that cyclic recursion carries (68 elements). Both have the same
//! `CommonCircuitData`, which is what lets a merge verify either kind of child.

use std::time::Instant;

use circuits::circuit::{Config, Proof, NUM_PUBLIC_INPUTS};
use circuits::{BatchCircuit, F};
use plonky2::gates::noop::NoopGate;
use plonky2::iop::target::{BoolTarget, Target};
use plonky2::iop::witness::{PartialWitness, WitnessWrite};
use plonky2::plonk::circuit_builder::CircuitBuilder;
use plonky2::plonk::circuit_data::{
    CircuitConfig, CircuitData, CommonCircuitData, VerifierCircuitData, VerifierCircuitTarget,
};
use plonky2::plonk::proof::ProofWithPublicInputsTarget;
use prover_gpu::Prover;

use crate::error::AggError;

const D: usize = 2;

/// Degree (log2 rows) of both recursion circuits.
pub const AGGREGATION_DEGREE_BITS: usize = 14;

struct WrapTargets {
    batch: ProofWithPublicInputsTarget<D>,
    /// Set to the merge circuit's verifier data, so a wrap proof carries what a merge proof does.
    verifier_data: VerifierCircuitTarget,
}

struct Child {
    is_merge: BoolTarget,
    merge: ProofWithPublicInputsTarget<D>,
    wrap: ProofWithPublicInputsTarget<D>,
}

struct MergeTargets {
    left: Child,
    right: Child,
    has_right: BoolTarget,
    verifier_data: VerifierCircuitTarget,
}

/// The built recursion circuits; build once per process.
pub struct AggregationCircuits {
    batch_common: CommonCircuitData<F, D>,
    batch_verifier: VerifierCircuitData<F, Config, D>,
    wrap: CircuitData<F, Config, D>,
    wrap_targets: WrapTargets,
    merge: CircuitData<F, Config, D>,
    merge_targets: MergeTargets,
    /// Seconds the two builds took.
    pub build_seconds: f64,
}

fn select_pis(b: &mut CircuitBuilder<F, D>, c: &Child) -> Vec<Target> {
    (0..NUM_PUBLIC_INPUTS).map(|i| b.select(c.is_merge, c.merge.public_inputs[i], c.wrap.public_inputs[i])).collect()
}

impl AggregationCircuits {
    /// Builds the wrap circuit for `batch`'s proofs and the merge circuit.
    pub fn build(batch: &BatchCircuit) -> Result<Self, AggError> {
        let start = Instant::now();
        let config = CircuitConfig::standard_recursion_config();

        // wrap: verify one batch proof, expose its public inputs, pad to the shared shape.
        let mut b = CircuitBuilder::<F, D>::new(config.clone());
        let batch_data = batch.data();
        let proof = b.add_virtual_proof_with_pis(&batch_data.common);
        let vd = b.constant_verifier_data(&batch_data.verifier_only);
        b.verify_proof::<Config>(&proof, &vd, &batch_data.common);
        b.register_public_inputs(&proof.public_inputs);
        // Unused by the wrap itself: present so that wraps and merges share one shape.
        let wrap_vd_pis = b.add_verifier_data_public_inputs();
        // Gates the merge circuit uses that the wrap does not need on its own.
        b.add_gate(plonky2::gates::constant::ConstantGate::new(config.num_constants), vec![]);
        while b.num_gates() < (1 << AGGREGATION_DEGREE_BITS) - 128 {
            b.add_gate(NoopGate, vec![]);
        }
        let (wrap, ok) = b.try_build_with_options::<Config>(true);
        if !ok || wrap.common.degree_bits() != AGGREGATION_DEGREE_BITS {
            return Err(AggError::Build(format!("wrap circuit has degree {}", wrap.common.degree_bits())));
        }
        let common = wrap.common.clone();

        // merge: two children, each a merge (cyclic) or a wrap proof.
        let mut b = CircuitBuilder::<F, D>::new(config);
        let wrap_vd = b.constant_verifier_data(&wrap.verifier_only);
        let child = |b: &mut CircuitBuilder<F, D>| Child {
            is_merge: b.add_virtual_bool_target_safe(),
            merge: b.add_virtual_proof_with_pis(&common),
            wrap: b.add_virtual_proof_with_pis(&common),
        };
        let left = child(&mut b);
        let right = child(&mut b);
        let has_right = b.add_virtual_bool_target_safe();
        let l = select_pis(&mut b, &left);
        let r = select_pis(&mut b, &right);
        // Chaining: left.new_root = right.old_root and left.c_out = right.c_in, when there is a right.
        for i in 0..4 {
            b.conditional_assert_eq(has_right.target, l[4 + i], r[i]);
            b.conditional_assert_eq(has_right.target, l[12 + i], r[8 + i]);
        }
        let mut out = Vec::with_capacity(NUM_PUBLIC_INPUTS);
        out.extend_from_slice(&l[0..4]);
        for i in 4..8 {
            out.push(b.select(has_right, r[i], l[i]));
        }
        out.extend_from_slice(&l[8..12]);
        for i in 12..16 {
            out.push(b.select(has_right, r[i], l[i]));
        }
        b.register_public_inputs(&out);
        let merge_vd_pis = b.add_verifier_data_public_inputs();
        for c in [&left, &right] {
            b.conditionally_verify_cyclic_proof::<Config>(c.is_merge, &c.merge, &c.wrap, &wrap_vd, &common)
                .map_err(|e| AggError::Build(e.to_string()))?;
        }
        let (merge, ok) = b.try_build_with_options::<Config>(true);
        if !ok {
            return Err(AggError::Build(format!(
                "merge circuit does not match the wrap's shape: degree {} vs {}, gates {:?} vs {:?}",
                merge.common.degree_bits(),
                common.degree_bits(),
                merge.common.gates,
                common.gates
            )));
        }
        Ok(Self {
            batch_common: batch_data.common.clone(),
            batch_verifier: batch_data.verifier_data(),
            wrap,
            wrap_targets: WrapTargets { batch: proof, verifier_data: wrap_vd_pis },
            merge,
            merge_targets: MergeTargets { left, right, has_right, verifier_data: merge_vd_pis },
            build_seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// The circuit every block proof verifies against.
    pub fn block_circuit(&self) -> &CircuitData<F, Config, D> {
        &self.merge
    }

    /// The wrap circuit.
    pub fn wrap_circuit(&self) -> &CircuitData<F, Config, D> {
        &self.wrap
    }

    /// Common data of the batch proofs this aggregates.
    pub fn batch_common(&self) -> &CommonCircuitData<F, D> {
        &self.batch_common
    }

    /// Verifies a batch proof with plonky2's verifier.
    pub fn verify_batch(&self, proof: &Proof) -> anyhow::Result<()> {
        self.batch_verifier.verify(proof.clone())
    }

    /// Proves a wrap of one (already verified) batch proof.
    pub fn prove_wrap(&self, prover: &Prover, batch: &Proof) -> Result<Proof, AggError> {
        let mut pw = PartialWitness::new();
        pw.set_proof_with_pis_target(&self.wrap_targets.batch, batch).map_err(AggError::prove)?;
        pw.set_verifier_data_target(&self.wrap_targets.verifier_data, &self.merge.verifier_only)
            .map_err(AggError::prove)?;
        prover.prove(&self.wrap, pw).map_err(AggError::prove)
    }

    /// Proves a merge of `left` and `right` (each with whether it is a merge proof); without a
    /// right child the merge re-proves the left one alone.
    pub fn prove_merge(
        &self,
        prover: &Prover,
        left: (&Proof, bool),
        right: Option<(&Proof, bool)>,
    ) -> Result<Proof, AggError> {
        let t = &self.merge_targets;
        let mut pw = PartialWitness::new();
        let right_or_left = right.unwrap_or(left);
        for (c, (proof, is_merge)) in [(&t.left, left), (&t.right, right_or_left)] {
            pw.set_bool_target(c.is_merge, is_merge).map_err(AggError::prove)?;
            // The unused side must still hold a proof of the right shape: the same proof serves.
            pw.set_proof_with_pis_target(&c.merge, proof).map_err(AggError::prove)?;
            pw.set_proof_with_pis_target(&c.wrap, proof).map_err(AggError::prove)?;
        }
        pw.set_bool_target(t.has_right, right.is_some()).map_err(AggError::prove)?;
        pw.set_verifier_data_target(&t.verifier_data, &self.merge.verifier_only).map_err(AggError::prove)?;
        prover.prove(&self.merge, pw).map_err(AggError::prove)
    }
}
