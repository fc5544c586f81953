//! The merge circuit: it verifies up to [`MERGE_ARITY`] children that are each a batch proof or a
//! merge proof (cyclic recursion), so that every block proof, whatever the number of batches, is a
//! `merge` proof against one verifier key.
//!
//! A merge verifies both kinds of child with one verifier, so both circuits share one
//! `CommonCircuitData`: the batch circuit is padded to the merge's shape (its gate set, its
//! degree, its public inputs: the 16 of a batch, then the 68 elements of verifier data that cyclic
//! recursion carries, zero in a batch proof). A batch proof goes straight into a merge, with no
//! wrapping proof between them (`docs/aggregation.md`).

use std::sync::Arc;
use std::time::Instant;

use circuits::circuit::{Config, Proof, NUM_PUBLIC_INPUTS};
use circuits::{BatchCircuit, Padding, F};
use plonky2::fri::reduction_strategies::FriReductionStrategy;
use plonky2::gates::arithmetic_base::ArithmeticGate;
use plonky2::gates::arithmetic_extension::ArithmeticExtensionGate;
use plonky2::gates::base_sum::BaseSumGate;
use plonky2::gates::constant::ConstantGate;
use plonky2::gates::coset_interpolation::CosetInterpolationGate;
use plonky2::gates::exponentiation::ExponentiationGate;
use plonky2::gates::gate::GateRef;
use plonky2::gates::multiplication_extension::MulExtensionGate;
use plonky2::gates::noop::NoopGate;
use plonky2::gates::poseidon::PoseidonGate;
use plonky2::gates::poseidon_mds::PoseidonMdsGate;
use plonky2::gates::random_access::RandomAccessGate;
use plonky2::gates::reducing::ReducingGate;
use plonky2::gates::reducing_extension::ReducingExtensionGate;
use plonky2::iop::target::{BoolTarget, Target};
use plonky2::iop::witness::{PartialWitness, WitnessWrite};
use plonky2::plonk::circuit_builder::CircuitBuilder;
use plonky2::plonk::circuit_data::{
    CircuitConfig, CircuitData, CommonCircuitData, VerifierCircuitTarget, VerifierOnlyCircuitData,
};
use plonky2::plonk::proof::ProofWithPublicInputsTarget;
use prover_gpu::Prover;

use crate::error::AggError;
use crate::keys::VerifierKeys;

const D: usize = 2;

/// Most children of one merge. A verifier of a 2^15-row proof takes about 4 640 rows: six take
/// 27 845 of 2^15, seven would take 32 477, within 291 rows of the next power of two
/// (docs/aggregation.md).
pub const MERGE_ARITY: usize = 6;

/// Refuses a merge of no children or of more than [`MERGE_ARITY`].
pub(crate) fn check_children(count: usize) -> Result<(), AggError> {
    if count == 0 || count > MERGE_ARITY {
        return Err(AggError::InvalidJob(format!("a merge of {count} children (1 to {MERGE_ARITY})")));
    }
    Ok(())
}

/// Fewest rows (log2) of the shared shape: the merge circuit, [`MERGE_ARITY`] verifiers, needs
/// more than 2^14. A batch circuit of more rows sets a larger shape.
pub const AGGREGATION_DEGREE_BITS: usize = 15;

/// Builds of the batch and merge circuits before their shapes agree: one when the first guess of
/// the merge's gates is right, a second when it missed some, a third for a gate set that grows
/// once more.
const MAX_BUILDS: usize = 3;

struct Child {
    is_merge: BoolTarget,
    proof: ProofWithPublicInputsTarget<D>,
}

struct MergeTargets {
    /// Rows the merge's gates take, before the padding to the shared shape.
    rows: usize,
    children: Vec<Child>,
    /// Whether child `i + 1` is there (the first always is; the present ones come first).
    present: Vec<BoolTarget>,
    verifier_data: VerifierCircuitTarget,
}

/// The built circuits of aggregation; build once per process.
pub struct AggregationCircuits {
    keys: Arc<VerifierKeys>,
    merge: CircuitData<F, Config, D>,
    merge_targets: MergeTargets,
    padding: Padding,
    /// Builds of the batch and merge circuits it took to agree on a shape; 0 where they were
    /// read from a file of their prover data (`crate::prover_data`).
    pub builds: usize,
    /// Seconds the builds took, the batch circuit's included; or the seconds the layouts and
    /// checks of circuits read from a file took (not the reading).
    pub build_seconds: f64,
}

/// The merge circuit for `batch`'s proofs, and whether it has their shape (if not, the batch
/// circuit needs padding to the merge's gates or degree).
fn build_merge(batch: &BatchCircuit) -> Result<(CircuitData<F, Config, D>, MergeTargets, bool), AggError> {
    let (b, targets) = lay_out_merge(batch)?;
    let merge = b.build::<Config>();
    let same_shape = merge.common == batch.data().common;
    Ok((merge, targets, same_shape))
}

/// The merge circuit for `batch`'s proofs laid out, before plonky2's build, and its targets.
fn lay_out_merge(batch: &BatchCircuit) -> Result<(CircuitBuilder<F, D>, MergeTargets), AggError> {
    let common = &batch.data().common;
    let mut b = CircuitBuilder::<F, D>::new(common.config.clone());
    let batch_vd = b.constant_verifier_data(&batch.data().verifier_only);
    let child = |b: &mut CircuitBuilder<F, D>| Child {
        is_merge: b.add_virtual_bool_target_safe(),
        proof: b.add_virtual_proof_with_pis(common),
    };
    let children: Vec<Child> = (0..MERGE_ARITY).map(|_| child(&mut b)).collect();
    let present: Vec<BoolTarget> = (1..MERGE_ARITY).map(|_| b.add_virtual_bool_target_safe()).collect();
    // The children present are a prefix: child i + 1 only after child i.
    for w in present.windows(2) {
        let both = b.and(w[0], w[1]);
        b.connect(both.target, w[1].target);
    }
    let pis: Vec<&[Target]> = children.iter().map(|c| &c.proof.public_inputs[..NUM_PUBLIC_INPUTS]).collect();
    // Chaining: each present child starts where the one before it ended (roots, commitments); the
    // block ends where the last present child does.
    let mut new_root: Vec<Target> = pis[0][4..8].to_vec();
    let mut c_out: Vec<Target> = pis[0][12..16].to_vec();
    for (here, p) in present.iter().zip(&pis[1..]) {
        for i in 0..4 {
            b.conditional_assert_eq(here.target, new_root[i], p[i]);
            b.conditional_assert_eq(here.target, c_out[i], p[8 + i]);
            new_root[i] = b.select(*here, p[4 + i], new_root[i]);
            c_out[i] = b.select(*here, p[12 + i], c_out[i]);
        }
    }
    let mut out = Vec::with_capacity(NUM_PUBLIC_INPUTS);
    out.extend_from_slice(&pis[0][0..4]);
    out.extend_from_slice(&new_root);
    out.extend_from_slice(&pis[0][8..12]);
    out.extend_from_slice(&c_out);
    b.register_public_inputs(&out);
    let verifier_data = b.add_verifier_data_public_inputs();
    let own = flat(&verifier_data);
    if common.num_public_inputs != NUM_PUBLIC_INPUTS + own.len() {
        return Err(AggError::Build(format!(
            "the batch circuit has {} public inputs, not its {NUM_PUBLIC_INPUTS} and the {} of the merge's verifier data",
            common.num_public_inputs,
            own.len()
        )));
    }
    // One verifier a child, against the verifier data of the kind it claims: this circuit's own
    // (a public input, which the block verifier checks) for a merge, the batch circuit's for a
    // batch. A merge child must also carry this circuit's verifier data among its public
    // inputs, as this proof does: that is what ties every merge below to the same circuit
    // (cyclic recursion). plonky2's `conditionally_verify_cyclic_proof` does the same with two
    // proofs a child and a selection between them, which cost about 1 900 rows a child.
    for c in &children {
        for (&carried, &mine) in c.proof.public_inputs[NUM_PUBLIC_INPUTS..].iter().zip(&own) {
            b.conditional_assert_eq(c.is_merge.target, carried, mine);
        }
        let vd = b.select_verifier_data(c.is_merge, &verifier_data, &batch_vd);
        b.verify_proof::<Config>(&c.proof, &vd, common);
    }
    let rows = b.num_gates();
    // The batch circuit's own gates, which the merge evaluates but need not use.
    for gate in &common.gates {
        b.add_gate_to_gate_set(gate.clone());
    }
    while b.num_gates() <= 1 << (common.degree_bits() - 1) {
        b.add_gate(NoopGate, vec![]);
    }
    Ok((b, MergeTargets { rows, children, present, verifier_data }))
}

/// Verifier data's targets in the order plonky2 registers them as public inputs
/// (`add_verifier_data_public_inputs`): the digest, then the cap.
fn flat(vd: &VerifierCircuitTarget) -> Vec<Target> {
    vd.circuit_digest
        .elements
        .iter()
        .chain(vd.constants_sigmas_cap.0.iter().flat_map(|h| &h.elements))
        .copied()
        .collect()
}

/// plonky2's recursive verifier's gates under `config`: the first guess of the merge circuit's
/// gate set, so that one build of each circuit usually suffices. `AggregationCircuits::build`
/// learns any gate this misses, at the cost of a rebuild, and a test checks that it misses none.
fn verifier_gates(config: &CircuitConfig) -> Vec<GateRef<F, D>> {
    let arity_bits = match &config.fri_config.reduction_strategy {
        FriReductionStrategy::ConstantArityBits(bits, _) => *bits,
        FriReductionStrategy::Fixed(bits) => bits.iter().copied().max().unwrap_or(1),
        FriReductionStrategy::MinSize(max) => max.unwrap_or(4),
    }
    .max(1);
    // FRI's coset interpolation, with the degree `with_max_degree` (crate-private) gives it for
    // the largest degree the config allows.
    let mut interpolation = CosetInterpolationGate::<F, D>::new(arity_bits);
    let points = 1usize << arity_bits;
    let max_degree = config.max_quotient_degree_factor.max(2);
    interpolation.degree = (points.saturating_sub(2)) / ((points.saturating_sub(2)) / (max_degree - 1) + 1) + 2;
    let (wires, routed) = (config.num_wires, config.num_routed_wires);
    vec![
        GateRef::new(ConstantGate::new(config.num_constants)),
        GateRef::new(ArithmeticGate::new_from_config(config)),
        GateRef::new(ArithmeticExtensionGate::<D>::new_from_config(config)),
        GateRef::new(MulExtensionGate::<D>::new_from_config(config)),
        GateRef::new(BaseSumGate::<2>::new_from_config::<F>(config)),
        GateRef::new(PoseidonGate::<F, D>::new()),
        GateRef::new(PoseidonMdsGate::<F, D>::new()),
        GateRef::new(ReducingGate::<D>::new(ReducingGate::<D>::max_coeffs_len(wires, routed))),
        GateRef::new(ReducingExtensionGate::<D>::new(ReducingExtensionGate::<D>::max_coeffs_len(wires, routed))),
        GateRef::new(RandomAccessGate::<F, D>::new_from_config(config, arity_bits.max(config.fri_config.cap_height))),
        GateRef::new(interpolation),
    ]
}

/// The most slots a batch may have for the network's circuits to be of each size: entry `i` is
/// for 2^([`AGGREGATION_DEGREE_BITS`] + i) rows, up to the largest batch circuit's
/// 2^[`circuits::MAX_BATCH_DEGREE_BITS`] (a test lays out each and one slot more). Batch and
/// merge share one shape, and the merge's six verifiers fill less than 2^15, so the batch's
/// layout sets it.
pub const MOST_SLOTS_BY_DEGREE: [usize; circuits::MAX_BATCH_DEGREE_BITS - AGGREGATION_DEGREE_BITS + 1] =
    [183, 367, 734, 1470, circuits::MAX_BATCH_CAPACITY];

/// The gates plonky2's recursive verifier takes under `config` only for proofs of 2^`degree_bits`
/// rows or more, beside [`verifier_gates`]: its FRI query steps raise a constant to a query
/// index of `degree_bits + rate_bits` bits (`exp_from_bits_const_base`), in arithmetic gates up
/// to as many bits as one has operations and past that in an `ExponentiationGate`: from 2^18
/// rows in the standard recursion config. A test holds both lists to the verifier's gates at
/// every degree a batch circuit may have.
fn verifier_gates_at(config: &CircuitConfig, degree_bits: usize) -> Vec<GateRef<F, D>> {
    let ops = if config.use_base_arithmetic_gate {
        ArithmeticGate::new_from_config(config).num_ops
    } else {
        ArithmeticExtensionGate::<D>::new_from_config(config).num_ops
    };
    if degree_bits + config.fri_config.rate_bits > ops {
        vec![GateRef::new(ExponentiationGate::<F, D>::new_from_config(config))]
    } else {
        Vec::new()
    }
}

/// The batch circuit's padding before any build: the guessed verifier gates, the aggregation
/// shape's rows, and room for the merge's verifier data among the public inputs.
fn first_padding(config: &CircuitConfig) -> Padding {
    let verifier_data_len = 4 + 4 * (1 << config.fri_config.cap_height);
    Padding {
        gates: verifier_gates(config),
        min_degree_bits: AGGREGATION_DEGREE_BITS,
        public_inputs: NUM_PUBLIC_INPUTS + verifier_data_len,
    }
}

impl AggregationCircuits {
    /// The rows (log2) of the circuits [`AggregationCircuits::build`] builds for batches of
    /// `capacity` slots, batch and merge alike, known without building them
    /// ([`MOST_SLOTS_BY_DEGREE`]): what their time and memory follow.
    pub fn degree_bits_for(capacity: usize) -> Result<usize, AggError> {
        circuits::check_capacity(capacity).map_err(|e| AggError::Build(e.to_string()))?;
        // The last entry is the largest capacity, so a capacity that passed has an entry.
        let i =
            MOST_SLOTS_BY_DEGREE.iter().position(|&most| capacity <= most).unwrap_or(MOST_SLOTS_BY_DEGREE.len() - 1);
        Ok(AGGREGATION_DEGREE_BITS + i)
    }

    /// Builds the batch circuit of `capacity` slots in the merge circuit's shape, and the merge
    /// circuit. The two shapes depend on each other (the merge evaluates the batch's gates; the
    /// batch carries the merge's): the batch is built with the gates the last merge used until
    /// the merge built for it has its shape.
    pub fn build(capacity: usize) -> Result<(BatchCircuit, Self), AggError> {
        let start = Instant::now();
        let config = CircuitConfig::standard_recursion_config();
        let mut padding = first_padding(&config);
        for builds in 1..=MAX_BUILDS {
            let batch = BatchCircuit::build_shaped(capacity, &padding, |bits| verifier_gates_at(&config, bits))
                .map_err(|e| AggError::Build(e.to_string()))?;
            let (merge, merge_targets, same_shape) = build_merge(&batch)?;
            if same_shape {
                let circuits = Self {
                    keys: Arc::new(VerifierKeys::new(capacity, batch.data().verifier_data(), merge.verifier_data())),
                    merge,
                    merge_targets,
                    padding,
                    builds,
                    build_seconds: start.elapsed().as_secs_f64(),
                };
                return Ok((batch, circuits));
            }
            let missing: Vec<GateRef<F, D>> =
                merge.common.gates.iter().filter(|g| !padding.gates.contains(g)).cloned().collect();
            padding.gates.extend(missing);
            padding.min_degree_bits = padding.min_degree_bits.max(merge.common.degree_bits());
        }
        Err(AggError::Build(format!("the batch and merge circuits found no common shape in {MAX_BUILDS} builds")))
    }

    /// The circuits [`AggregationCircuits::build`] made for batches of `capacity` slots, from
    /// the circuit data its builds made (read back from a file: `crate::prover_data`) and the
    /// padding the batch circuit took. The layouts are made again for their targets, in a small
    /// part of a build's time; data that does not fit them, or whose prover and verifier parts
    /// disagree, is refused.
    pub(crate) fn with_data(
        capacity: usize,
        padding: Padding,
        batch: CircuitData<F, Config, D>,
        merge: CircuitData<F, Config, D>,
    ) -> Result<(BatchCircuit, Self), AggError> {
        let start = Instant::now();
        let config = CircuitConfig::standard_recursion_config();
        let bad = |why: String| AggError::ProverData(why);
        if batch.common.config != config {
            return Err(bad("the batch circuit is not of the network's configuration".into()));
        }
        if merge.common != batch.common {
            return Err(bad("the batch and merge circuits do not share one shape".into()));
        }
        for (which, data) in [("batch", &batch), ("merge", &merge)] {
            crate::keys::check_digest(&data.verifier_data())
                .map_err(|why| bad(format!("the {which} circuit: {why}")))?;
            let prover = &data.prover_only;
            if prover.circuit_digest != data.verifier_only.circuit_digest
                || prover.constants_sigmas_commitment.merkle_tree.cap != data.verifier_only.constants_sigmas_cap
            {
                return Err(bad(format!("the {which} circuit's prover data is not its verifier key's")));
            }
        }
        let batch = BatchCircuit::with_data(capacity, &padding, |bits| verifier_gates_at(&config, bits), batch)
            .map_err(|e| bad(e.to_string()))?;
        let (b, merge_targets) = lay_out_merge(&batch)?;
        // The merge's own verifier data is its last public inputs, targets of its layout: data of
        // another circuit (the batch circuit's, in the merge's place) names others.
        let own = flat(&merge_targets.verifier_data);
        if merge.prover_only.public_inputs.get(NUM_PUBLIC_INPUTS..) != Some(&own[..]) {
            return Err(bad("the merge circuit's data is not of its layout (its public inputs)".into()));
        }
        if b.num_public_inputs() != merge.common.num_public_inputs || b.num_gates() > merge.common.degree() {
            return Err(bad(format!(
                "the merge circuit has {} public inputs and 2^{} rows where its layout has {} and takes {} rows",
                merge.common.num_public_inputs,
                merge.common.degree_bits(),
                b.num_public_inputs(),
                b.num_gates()
            )));
        }
        let circuits = Self {
            keys: Arc::new(VerifierKeys::new(capacity, batch.data().verifier_data(), merge.verifier_data())),
            merge,
            merge_targets,
            padding,
            builds: 0,
            build_seconds: start.elapsed().as_secs_f64(),
        };
        Ok((batch, circuits))
    }

    /// The circuit every block proof verifies against.
    pub fn block_circuit(&self) -> &CircuitData<F, Config, D> {
        &self.merge
    }

    /// Rows the merge circuit's gates take, of the shared shape's 2^degree: what decides how
    /// many children a merge can have.
    pub fn merge_rows(&self) -> usize {
        self.merge_targets.rows
    }

    /// What the batch circuit is padded with to share the merge circuit's shape.
    pub fn padding(&self) -> &Padding {
        &self.padding
    }

    /// Common data of the batch proofs this aggregates: the merge circuit's, which `build`
    /// checked they share.
    pub fn batch_common(&self) -> &CommonCircuitData<F, D> {
        &self.merge.common
    }

    /// Verifies a batch proof with plonky2's verifier.
    pub fn verify_batch(&self, proof: &Proof) -> anyhow::Result<()> {
        self.keys.batch_data().verify(proof.clone())
    }

    /// What checking these circuits' proofs takes, without the prover's data; shared by the
    /// services that only check.
    pub fn keys(&self) -> &Arc<VerifierKeys> {
        &self.keys
    }

    /// Proves a merge of `children` (each with whether it is a merge proof), one to
    /// [`MERGE_ARITY`] of them, in order; a merge of one re-proves its child alone.
    pub fn prove_merge(&self, prover: &Prover, children: &[(&Proof, bool)]) -> Result<Proof, AggError> {
        self.prove_merge_carrying(prover, children, &self.merge.verifier_only)
    }

    /// [`prove_merge`](Self::prove_merge) with `carried` as the verifier data among the proof's
    /// public inputs, where an honest merge carries its own. Only for tests: a merge proof
    /// carrying other verifier data is a proof of the merge circuit, and a merge must refuse it
    /// as a child, or its own children could have been verified against any circuit.
    #[doc(hidden)]
    pub fn prove_merge_carrying(
        &self,
        prover: &Prover,
        children: &[(&Proof, bool)],
        carried: &VerifierOnlyCircuitData<Config, D>,
    ) -> Result<Proof, AggError> {
        let pw = self.witness(children, carried)?;
        Ok(prover.prove(&self.merge, pw)?)
    }

    /// The merge circuit's inputs for a merge of `children`, as [`prove_merge`](Self::prove_merge)
    /// sets them.
    pub(crate) fn merge_witness(&self, children: &[(&Proof, bool)]) -> Result<PartialWitness<F>, AggError> {
        self.witness(children, &self.merge.verifier_only)
    }

    fn witness(
        &self,
        children: &[(&Proof, bool)],
        carried: &VerifierOnlyCircuitData<Config, D>,
    ) -> Result<PartialWitness<F>, AggError> {
        check_children(children.len())?;
        let t = &self.merge_targets;
        let mut pw = PartialWitness::new();
        for (i, c) in t.children.iter().enumerate() {
            // An absent child's verifier must still hold a proof of the right shape: the first
            // child's serves, and the chaining ignores it.
            let (proof, is_merge) = children.get(i).copied().unwrap_or(children[0]);
            pw.set_bool_target(c.is_merge, is_merge).map_err(AggError::prove)?;
            pw.set_proof_with_pis_target(&c.proof, proof).map_err(AggError::prove)?;
        }
        for (i, here) in t.present.iter().enumerate() {
            pw.set_bool_target(*here, i + 1 < children.len()).map_err(AggError::prove)?;
        }
        pw.set_verifier_data_target(&t.verifier_data, carried).map_err(AggError::prove)?;
        Ok(pw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each size's most slots lay out within it, and one slot more does not: the network's
    /// circuits' rows known from the capacity alone.
    #[test]
    fn the_most_slots_of_each_size_fill_it() {
        use rayon::prelude::*;
        let padding = first_padding(&CircuitConfig::standard_recursion_config());
        let mut cases = vec![(1, AGGREGATION_DEGREE_BITS)];
        for (i, &most) in MOST_SLOTS_BY_DEGREE.iter().enumerate() {
            cases.push((most, AGGREGATION_DEGREE_BITS + i));
            if most < circuits::MAX_BATCH_CAPACITY {
                cases.push((most + 1, AGGREGATION_DEGREE_BITS + i + 1));
            }
        }
        cases.par_iter().for_each(|&(capacity, bits)| {
            let laid = BatchCircuit::degree_bits_of(capacity, &padding).expect("layout");
            assert_eq!(laid, bits, "{capacity} slots lay out 2^{laid} rows");
            assert_eq!(AggregationCircuits::degree_bits_for(capacity).expect("capacity"), bits, "{capacity} slots");
        });
        for capacity in [0, circuits::MAX_BATCH_CAPACITY + 1] {
            assert!(AggregationCircuits::degree_bits_for(capacity).is_err(), "{capacity} slots");
        }
    }

    /// The gates guessed for the merge circuit are the ones plonky2's verifier takes, at every
    /// degree a batch circuit may have: a gate missed costs a second build of both circuits
    /// (2^18 rows, 1 450 slots, took two before the degree's gates were guessed), and a gate
    /// added that no row uses costs every proof its constraints at every point of the quotient.
    #[test]
    fn the_verifier_gates_guessed_are_plonkys_at_every_degree() {
        let config = CircuitConfig::standard_recursion_config();
        let batch = BatchCircuit::build_padded(2, &first_padding(&config)).expect("batch");
        let always = verifier_gates(&config);
        for bits in AGGREGATION_DEGREE_BITS..=circuits::MAX_BATCH_DEGREE_BITS {
            // A verifier of proofs of the network's batch circuit, were it of 2^bits rows.
            let mut common = batch.data().common.clone();
            common.fri_params = config.fri_config.fri_params(bits, false);
            let mut b = CircuitBuilder::<F, D>::new(config.clone());
            let proof = b.add_virtual_proof_with_pis(&common);
            let vd = b.add_virtual_verifier_data(config.fri_config.cap_height);
            b.verify_proof::<Config>(&proof, &vd, &common);
            let used = b.build::<Config>().common.gates;
            let at = verifier_gates_at(&config, bits);
            let unguessed: Vec<String> = used
                .iter()
                .filter(|g| !always.contains(g) && !at.contains(g))
                .map(|g| g.0.id())
                .filter(|id| id != "NoopGate" && id != "PublicInputGate")
                .collect();
            assert!(unguessed.is_empty(), "2^{bits}: the verifier takes {unguessed:?}");
            for g in &at {
                assert!(used.contains(g), "2^{bits}: the verifier does not take {}", g.0.id());
            }
            // The default shape carries nothing it does not use.
            assert_eq!(at.is_empty(), bits < 18, "2^{bits}");
        }
    }
}
