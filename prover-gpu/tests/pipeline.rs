//! Whole proofs from our pipeline: plonky2's verifier accepts them, and everything before FRI's
//! proof-of-work nonce (caps, openings, FRI commit-phase caps) is bit-identical to plonky2's own
//! proof of the same witness.

use plonky2::field::types::{Field, Field64, Sample};
use plonky2::iop::generator::generate_partial_witness;
use plonky2::iop::target::Target;
use plonky2::iop::witness::{PartialWitness, PartitionWitness, Witness, WitnessWrite};
use plonky2::plonk::circuit_data::CircuitData;
use plonky2::plonk::proof::ProofWithPublicInputs;
use plonky2::plonk::prover::prove_with_partition_witness;
use plonky2::util::timing::TimingTree;
use prover_gpu::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

mod common;
#[macro_use]
mod rayon_kernels;
mod keeping;

use common::{hashed_inputs, verifier_of, witness, D};

/// A circuit with the gates our circuits use: Poseidon, arithmetic (base and extension),
/// random access, range checks (base-sum), constants and public inputs.
fn small_circuit(hashes: usize) -> (CircuitData<F, Config, D>, Vec<Target>) {
    let (mut b, inputs) = hashed_inputs(hashes);
    let prod = b.mul(inputs[0], inputs[1]);
    let sum = b.add(prod, inputs[2]);
    let c = b.constant(F::from_canonical_u64(12345));
    let x = b.mul_add(sum, c, inputs[3]);
    b.register_public_input(x);
    let small = b.constant(F::from_canonical_u64(1000));
    b.range_check(small, 16);
    let table = [inputs[0], inputs[1], inputs[2], inputs[3]];
    let idx = b.constant(F::from_canonical_u64(2));
    let picked = b.random_access(idx, table.to_vec());
    b.connect(picked, inputs[2]);
    let e = b.add_virtual_extension_target();
    let e2 = b.mul_extension(e, e);
    b.register_public_inputs(&e2.0);
    let mut targets = inputs;
    targets.extend(e.0);
    (b.build::<Config>(), targets)
}

/// Everything in the proof the FRI proof-of-work nonce does not influence.
fn assert_same_before_pow(ours: &ProofWithPublicInputs<F, Config, D>, stock: &ProofWithPublicInputs<F, Config, D>) {
    assert_eq!(ours.public_inputs, stock.public_inputs);
    let (o, s) = (&ours.proof, &stock.proof);
    assert_eq!(o.wires_cap, s.wires_cap, "wires cap");
    assert_eq!(o.plonk_zs_partial_products_cap, s.plonk_zs_partial_products_cap, "Z cap");
    assert_eq!(o.quotient_polys_cap, s.quotient_polys_cap, "quotient cap");
    assert_eq!(o.openings, s.openings, "openings");
    assert_eq!(o.opening_proof.commit_phase_merkle_caps, s.opening_proof.commit_phase_merkle_caps, "FRI caps");
    assert_eq!(o.opening_proof.final_poly, s.opening_proof.final_poly, "FRI final polynomial");
}

/// Both provers on one run of the generators (which draw random values for unused wires).
fn check(data: &CircuitData<F, Config, D>, pw: PartialWitness<F>, backend: &dyn Backend) {
    let (prover, common) = (&data.prover_only, &data.common);
    let partition = generate_partial_witness(pw.clone(), prover, common).expect("witness");
    let stock = prove_with_partition_witness(prover, common, partition.clone(), &mut TimingTree::default())
        .expect("stock proof");
    let (ours, _) = prove_with_partition(backend, prover, common, partition).expect("pipeline proof");
    assert_same_before_pow(&ours, &stock);
    data.verify(ours).expect("plonky2 verifies the pipeline's proof");
    // And from the partial witness, generators included.
    data.verify(prove(backend, prover, common, pw).expect("pipeline proof")).expect("verifies");
}

#[test]
fn pipeline_proofs_verify_and_match_plonky2() {
    // 1 hash: a small trace; 300 hashes: 2^9 rows and more.
    for (hashes, seed) in [(1, 1), (300, 2)] {
        let (data, targets) = small_circuit(hashes);
        check(&data, witness(&targets, seed), &RayonBackend);
    }
}

#[test]
fn pipeline_proves_a_recursive_verifier() {
    let (inner, targets) = small_circuit(20);
    let (outer, pw) = verifier_of(&inner, witness(&targets, 3), |_| {});
    check(&outer, pw, &RayonBackend);
}

/// A backend that keeps the wires, Z and quotient trees, and the wires and Z coefficients (as
/// the CUDA backend does on the device) makes the same proofs: the quotient and FRI's query
/// rounds read the kept leaves and paths through it, the openings and FRI's combination the kept
/// coefficients, and every proof releases them, on success and on a failure after the
/// commitments.
#[test]
fn proofs_from_kept_trees_verify_and_release_them() {
    let (data, targets) = small_circuit(300);
    let keeping = keeping::Keeping::new(false);
    check(&data, witness(&targets, 9), &keeping);
    assert!(keeping.kept.is_empty(), "every proof released its trees");
    let (outer, pw) = verifier_of(&data, witness(&targets, 10), |_| {});
    check(&outer, pw, &keeping);
    assert!(keeping.kept.is_empty());

    let failing = keeping::Keeping::new(true);
    let err = prove(&failing, &data.prover_only, &data.common, witness(&targets, 11)).expect_err("no proof of work");
    assert!(matches!(err, BackendError::Cuda(_)), "{err}");
    assert!(failing.kept.is_empty(), "a failed proof released its trees");
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-run.sh runs it where one is lent"]
fn cuda_pipeline_proofs_verify_and_agree_with_rayon_kernel_by_kernel() {
    use prover_gpu::cuda::Streams;
    // Both ways of issuing work: one stream in issue order, and a stream per thread with cudarc's
    // events between them (the four concurrent proofs below then run on four streams, sharing
    // the circuits' constants and sigmas and the twiddles across them).
    for streams in [Streams::One, Streams::DEFAULT] {
        eprintln!("CUDA streams: {streams:?}");
        let _ = cuda_proofs_verify_and_agree_with_rayon(CudaBackend::with_streams(0, streams).expect("a CUDA device"));
    }
}

/// The device test above, over the kernels built for the CPU (`cuda::emulated`): the CUDA
/// backend's whole proving path, on every machine.
#[test]
fn emulated_cuda_pipeline_proofs_verify_and_agree_with_rayon_kernel_by_kernel() {
    let (cuda, need) = cuda_proofs_verify_and_agree_with_rayon(CudaBackend::emulated().expect("a C++ compiler"));
    // Exact, at every allocation: four proofs of two circuits at once never held more than the
    // estimate a prover checks before its first proof, the driver's slack left out.
    let peak = cuda.device().peak() as u64;
    let model = need - 4 * cuda::footprint::SLACK_PER_PROOF;
    eprintln!(
        "exact peak {:.1} MiB, estimated {:.1} MiB before the slack",
        peak as f64 / 1048576.0,
        model as f64 / 1048576.0
    );
    assert!(peak <= model, "{peak} bytes allocated at once, {model} estimated");
}

/// Proofs on `cuda`, one at a time, four at once, and through the dual backend; returns the
/// backend and the device memory estimated for the four at once.
fn cuda_proofs_verify_and_agree_with_rayon<D: prover_gpu::cuda::Device>(cuda: CudaBackend<D>) -> (CudaBackend<D>, u64) {
    let (data, targets) = small_circuit(300);
    check(&data, witness(&targets, 4), &cuda);
    // Two proofs later, the only leaves still on the device are the circuit's constants and
    // sigmas, which the quotient kernel uploaded and the next proof reads again: the wires, Z
    // and quotient leaves the proofs kept there were released.
    cuda.quotient_kernel_ready().expect("the quotient kernel compiles");
    assert_eq!((cuda.resident_commitments(), cuda.held_commitments()), (1, 0), "released leaves are freed");
    // Workers share one backend (`rollup bench --workers W`, the prover service): proofs of two
    // circuits on four threads at once, their commitments kept and released side by side.
    let (outer, outer_pw) = verifier_of(&data, witness(&targets, 6), |_| {});
    std::thread::scope(|scope| {
        for seed in 0..4u64 {
            let (data, targets, outer, outer_pw, cuda) = (&data, &targets, &outer, &outer_pw, &cuda);
            scope.spawn(move || {
                let (d, pw) =
                    if seed % 2 == 0 { (data, witness(targets, 10 + seed)) } else { (outer, outer_pw.clone()) };
                let proof = prove(cuda, &d.prover_only, &d.common, pw).expect("a concurrent proof");
                d.verify(proof).expect("plonky2 verifies it");
            });
        }
    });
    assert_eq!(
        (cuda.resident_commitments(), cuda.held_commitments()),
        (2, 0),
        "each circuit's constants and sigmas stay; every proof released its own trees"
    );
    // What a prover checks before its first proof: four of these fit, and a million do not, and
    // the error says how many do.
    let commons = [&data.common, &outer.common];
    let need = cuda::footprint::need(&commons.map(cuda::footprint::Footprint::of), 4);
    eprintln!(
        "four proofs in flight: peak device memory {:.1} MiB (sampled), {:.1} MiB estimated with the slack",
        cuda.peak_device_bytes().expect("a device backend") as f64 / f64::from(1 << 20),
        need as f64 / f64::from(1 << 20)
    );
    cuda.check_memory(&commons, 4).expect("four proofs of these circuits fit");
    match cuda.check_memory(&commons, 1_000_000) {
        Err(BackendError::DeviceMemory { in_flight: 1_000_000, fit, .. }) => assert!(fit >= 4, "{fit} fit"),
        other => panic!("a million proofs in flight: {other:?}"),
    }
    let dual = DualBackend { first: RayonBackend, second: cuda };
    check(&data, witness(&targets, 5), &dual);
    (dual.second, need)
}

#[test]
fn a_broken_witness_is_a_typed_error() {
    let (data, targets) = small_circuit(1);
    let mut pw = witness(&targets, 5);
    // Connect-violating: set an output the generators also compute.
    let mut rng = StdRng::seed_from_u64(6);
    pw.set_target(data.prover_only.public_inputs[0], F::sample(&mut rng)).expect("set");
    let err = prove(&RayonBackend, &data.prover_only, &data.common, pw).expect_err("refused");
    assert!(matches!(err, BackendError::Witness(_)), "{err}");
}

/// [`small_circuit`] of 300 hashes and a recursive verifier of its proof, each with a witness:
/// the verifier's inner proof from seed `seed`, the small circuit's witness from `seed + 1`.
fn ours_and_a_verifier(seed: u64) -> [(CircuitData<F, Config, D>, PartialWitness<F>); 2] {
    let (inner, targets) = small_circuit(300);
    let (outer, outer_pw) = verifier_of(&inner, witness(&targets, seed), |_| {});
    let inner_pw = witness(&targets, seed + 1);
    [(inner, inner_pw), (outer, outer_pw)]
}

/// `ours` sets every target `pw` has plonky2's generation set, to plonky2's value, except the
/// public-input gate's unused wires, which plonky2 draws at random.
fn assert_plonky2s_witness(ours: &PartitionWitness<F>, data: &CircuitData<F, Config, D>, pw: PartialWitness<F>) {
    let (prover, common) = (&data.prover_only, &data.common);
    let first = generate_partial_witness(pw.clone(), prover, common).expect("plonky2");
    let second = generate_partial_witness(pw, prover, common).expect("plonky2 again");
    let mut random = 0;
    for (i, ((o, a), b)) in ours.values.iter().zip(&first.values).zip(&second.values).enumerate() {
        assert_eq!(o.is_some(), a.is_some(), "target {i} set by one only");
        if a == b {
            assert_eq!(o, a, "target {i}");
        } else {
            random += 1;
        }
    }
    assert!(random <= common.config.num_wires, "{random} targets differ between two runs of plonky2's");
}

/// Our witness generation (plonky2's generators, our scheduler, our Poseidon rounds and
/// arithmetic operations) sets every target to plonky2's value, on a circuit with our gates and
/// on a recursive verifier: the first generation by plonky2's rounds, and a second, of another
/// witness where the circuit has one, in the order the first ran its generators.
#[test]
fn witness_generation_matches_plonky2() {
    let [(inner, inner_pw), (outer, outer_pw)] = ours_and_a_verifier(7);
    let another = witness(&small_circuit(300).1, 70);
    // The gates whose generators take our operations: the base field's arithmetic in both; the
    // extension's, which a recursive verifier's arithmetic is, in the verifier.
    for (data, pws, extension) in [(inner, [inner_pw, another], false), (outer, [outer_pw.clone(), outer_pw], true)] {
        let (prover, common) = (&data.prover_only, &data.common);
        let table = prover_gpu::witness::WatchTable::of(prover, common).expect("table");
        assert!(table.fast_poseidon_generators() > 0, "the Poseidon gates take the fast rounds");
        let [base, ext, mul_ext] = table.fast_arithmetic_generators();
        assert!(base > 0, "the arithmetic gates take our operations");
        if extension {
            assert!(ext > 0 && mul_ext > 0, "the extension's arithmetic gates take ours: {ext}, {mul_ext}");
        }
        for (round, pw) in pws.into_iter().enumerate() {
            assert_eq!(table.has_schedule(), round > 0, "the first generation leaves its order");
            let ours = prover_gpu::witness::generate_partial_witness(pw.clone(), prover, common, &table).expect("ours");
            assert_plonky2s_witness(&ours, &data, pw);
        }
        assert_eq!(table.replays(), (1, 0), "the second generation followed the first's order");
    }
}

/// A witness that sets other targets than the one the order was learned from leaves the order
/// where a generator finds an input unset, and the generation goes on by plonky2's rounds: the
/// values are plonky2's. The order is learned here from a witness that also sets the circuit's
/// last digest, which the generators compute, so what reads the digest runs earlier in that
/// order than a witness without it allows.
#[test]
fn witness_generation_off_the_learned_order_matches_plonky2() {
    let (data, targets) = small_circuit(40);
    let (prover, common) = (&data.prover_only, &data.common);
    let pw = witness(&targets, 11);
    let full = generate_partial_witness(pw.clone(), prover, common).expect("plonky2");
    let mut more = pw.clone();
    for &t in &prover.public_inputs[..4] {
        more.set_target(t, full.get_target(t)).expect("set");
    }
    let table = prover_gpu::witness::WatchTable::of(prover, common).expect("table");
    let learned = prover_gpu::witness::generate_partial_witness(more.clone(), prover, common, &table).expect("ours");
    assert_plonky2s_witness(&learned, &data, more);
    assert!(table.has_schedule());
    let ours = prover_gpu::witness::generate_partial_witness(pw.clone(), prover, common, &table).expect("ours");
    assert_eq!(table.replays(), (0, 1), "the generation left the order");
    assert_plonky2s_witness(&ours, &data, pw);
    // A conflicting input is still refused on the order, as by the rounds.
    let mut bad = witness(&targets, 12);
    bad.set_target(prover.public_inputs[0], F::ONE).expect("set");
    let err = prover_gpu::witness::generate_partial_witness(bad, prover, common, &table).expect_err("refused");
    assert!(matches!(err, BackendError::Witness(_)), "{err}");
}

/// The wire columns read off a generated witness equal plonky2's `full_witness`, column by
/// column, wires that nothing set included (zero in both), and are canonical: on a circuit with
/// our gates and on a recursive verifier.
#[test]
fn wire_columns_equal_plonky2s_full_witness() {
    for (data, pw) in ours_and_a_verifier(9) {
        let (prover, common) = (&data.prover_only, &data.common);
        let partition = generate_partial_witness(pw, prover, common).expect("plonky2");
        let (n, k) = (common.degree(), common.config.num_wires);
        let unset = (0..n * k).filter(|&t| partition.values[partition.representative_map[t]].is_none()).count();
        assert!(unset > 0, "some wires are left unset, so the zero default is exercised");
        let columns = prover_gpu::witness::wire_columns(&partition);
        // Canonical, so that a device backend uploads them as they lie.
        assert!(columns.iter().all(|v| v.0 < F::ORDER), "canonical columns");
        let matrix = partition.full_witness();
        assert_eq!(columns.len(), n * k);
        for j in 0..k {
            let column: Vec<F> = (0..n).map(|i| matrix.get_wire(i, j)).collect();
            assert_eq!(columns[j * n..(j + 1) * n], column, "wire {j} of {k}");
        }
    }
}
