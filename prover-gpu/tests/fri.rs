//! Our transcript draws plonky2's challenges. Our FRI prover against plonky2's on random oracles at awkward shapes: the commit phase (every
//! layer's cap, the final polynomial) is bit-identical to `PolynomialBatch::prove_openings`; the
//! proof-of-work witness is the smallest there is; plonky2's `verify_fri_proof` accepts the proof
//! and refuses it once tampered with; the dual backend finds nothing to tell apart.

use plonky2::field::extension::Extendable;
use plonky2::field::polynomial::PolynomialCoeffs;
use plonky2::field::types::{Field, Field64, PrimeField64, Sample};
use plonky2::fri::oracle::PolynomialBatch;
use plonky2::fri::proof::FriProof;
use plonky2::fri::reduction_strategies::FriReductionStrategy;
use plonky2::fri::structure::{
    FriBatchInfo, FriInstanceInfo, FriOpeningBatch, FriOpenings, FriOracleInfo, FriPolynomialInfo,
};
use plonky2::fri::verifier::verify_fri_proof;
use plonky2::fri::{FriConfig, FriParams};
use plonky2::hash::hash_types::HashOut;
use plonky2::hash::merkle_tree::MerkleCap;
use plonky2::hash::poseidon::PoseidonHash;
use plonky2::iop::challenger::Challenger;
use plonky2::plonk::circuit_data::CircuitConfig;
use plonky2::util::timing::TimingTree;
use prover_gpu::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod kernels_only;
use kernels_only::KernelsOnly;

const D: usize = 2;

type FE = <F as Extendable<D>>::Extension;

/// One FRI set-up: the oracles' trace length and rate, the caps, the folding arities, the
/// proof of work.
#[derive(Clone)]
struct Case {
    degree_bits: usize,
    rate_bits: usize,
    cap_height: usize,
    arities: Vec<usize>,
    pow_bits: u32,
}

impl Case {
    fn params(&self) -> FriParams {
        FriConfig {
            rate_bits: self.rate_bits,
            cap_height: self.cap_height,
            proof_of_work_bits: self.pow_bits,
            reduction_strategy: FriReductionStrategy::Fixed(self.arities.clone()),
            num_query_rounds: 7,
        }
        .fri_params(self.degree_bits, false)
    }
}

/// Three oracles of 1, 5 and 3 random polynomials, plonky2's own commitments; every polynomial
/// opened at ζ, the second oracle's first two also at gζ (as the Z's are in a proof).
struct Openings {
    oracles: Vec<PolynomialBatch<F, Config, D>>,
    instance: FriInstanceInfo<F, D>,
    values: FriOpenings<F, D>,
}

fn openings(case: &Case, rng: &mut StdRng) -> Openings {
    let n = 1 << case.degree_bits;
    let oracles: Vec<_> = [1usize, 5, 3]
        .iter()
        .map(|&count| {
            let polys = (0..count)
                .map(|_| PolynomialCoeffs::new((0..n).map(|_| F::from_canonical_u64(rng.gen())).collect()))
                .collect();
            PolynomialBatch::from_coeffs(
                polys,
                case.rate_bits,
                false,
                case.cap_height,
                &mut TimingTree::default(),
                None,
            )
        })
        .collect();
    let zeta = FE::rand();
    let g = FE::primitive_root_of_unity(case.degree_bits);
    let all: Vec<_> =
        (0..oracles.len()).flat_map(|o| FriPolynomialInfo::from_range(o, 0..oracles[o].polynomials.len())).collect();
    let instance = FriInstanceInfo {
        oracles: oracles.iter().map(|o| FriOracleInfo { num_polys: o.polynomials.len(), blinding: false }).collect(),
        batches: vec![
            FriBatchInfo { point: zeta, polynomials: all },
            FriBatchInfo { point: g * zeta, polynomials: FriPolynomialInfo::from_range(1, 0..2) },
        ],
    };
    let values = FriOpenings {
        batches: instance
            .batches
            .iter()
            .map(|b| FriOpeningBatch {
                values: b
                    .polynomials
                    .iter()
                    .map(|p| oracles[p.oracle_index].polynomials[p.polynomial_index].to_extension::<D>().eval(b.point))
                    .collect(),
            })
            .collect(),
    };
    Openings { oracles, instance, values }
}

/// plonky2's challenger and our transcript with the same things already in them, the input
/// buffer part full.
fn transcripts(rng: &mut StdRng) -> (Challenger<F, PoseidonHash>, Transcript) {
    let (mut c, mut t) = (Challenger::new(), Transcript::new());
    let elements = F::rand_vec(rng.gen_range(1..20));
    c.observe_elements(&elements);
    t.observe_elements(&elements);
    (c, t)
}

fn verify(
    o: &Openings,
    start: &Challenger<F, PoseidonHash>,
    proof: &FriProof<F, PoseidonHash, D>,
    params: &FriParams,
) -> Result<(), String> {
    let challenges = start.clone().fri_challenges::<Config, D>(
        &proof.commit_phase_merkle_caps,
        &proof.final_poly,
        proof.pow_witness,
        params.degree_bits,
        &params.config,
        None,
        None,
    );
    let caps: Vec<MerkleCap<F, PoseidonHash>> = o.oracles.iter().map(|b| b.merkle_tree.cap.clone()).collect();
    verify_fri_proof::<F, Config, D>(&o.instance, &o.values, &challenges, &caps, proof, params)
        .map_err(|e| format!("{e:#}"))
}

/// The transcript just before the proof of work, rebuilt from the proof the way a verifier does.
fn before_pow(
    start: &Challenger<F, PoseidonHash>,
    proof: &FriProof<F, PoseidonHash, D>,
) -> Challenger<F, PoseidonHash> {
    let mut c = start.clone();
    c.get_extension_challenge::<D>();
    for cap in &proof.commit_phase_merkle_caps {
        c.observe_cap::<PoseidonHash>(cap);
        c.get_extension_challenge::<D>();
    }
    c.observe_extension_elements::<D>(&proof.final_poly.coeffs);
    c
}

fn leading_zeros_after(c: &Challenger<F, PoseidonHash>, candidate: u64) -> u32 {
    let mut c = c.clone();
    c.observe_element(F::from_canonical_u64(candidate));
    c.get_challenge().to_canonical_u64().leading_zeros()
}

#[test]
fn fri_commit_phase_is_plonky2s_and_the_proof_verifies() {
    let cases = [
        // Binary folding of a tiny trace: leaves of 4 elements (not hashed), no cap.
        Case { degree_bits: 4, rate_bits: 1, cap_height: 0, arities: vec![1, 1, 1], pow_bits: 3 },
        // Mixed arities; the last layer's tree is all cap (4 leaves, cap of 4).
        Case { degree_bits: 6, rate_bits: 1, cap_height: 2, arities: vec![3, 2], pow_bits: 6 },
        // The batch circuit's rate and arity, at a smaller trace.
        Case { degree_bits: 9, rate_bits: 3, cap_height: 4, arities: vec![4, 4], pow_bits: 8 },
        // No folding at all: the final polynomial is the whole quotient.
        Case { degree_bits: 3, rate_bits: 2, cap_height: 1, arities: vec![], pow_bits: 2 },
        // More coefficients than one of the combination's parallel blocks (2^10).
        Case { degree_bits: 12, rate_bits: 1, cap_height: 3, arities: vec![4, 4], pow_bits: 4 },
    ];
    let mut rng = StdRng::seed_from_u64(41);
    for case in &cases {
        let params = case.params();
        let o = openings(case, &mut rng);
        let oracles: Vec<&PolynomialBatch<F, Config, D>> = o.oracles.iter().collect();
        let (start, ours_start) = transcripts(&mut rng);
        let label = format!("degree 2^{}, rate 2^-{}, arities {:?}", case.degree_bits, case.rate_bits, case.arities);

        let stock = PolynomialBatch::prove_openings(
            &o.instance,
            &oracles,
            &mut start.clone(),
            &params,
            None,
            None,
            &mut TimingTree::default(),
        );
        let ours = fri::prove_openings(&RayonBackend, &o.instance, &oracles, &mut ours_start.clone(), &params)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(ours.commit_phase_merkle_caps, stock.commit_phase_merkle_caps, "{label}: layer caps");
        assert_eq!(ours.final_poly, stock.final_poly, "{label}: final polynomial");
        assert_eq!(ours.query_round_proofs.len(), 7);
        verify(&o, &start, &ours, &params).unwrap_or_else(|e| panic!("{label}: plonky2 refuses our FRI proof: {e}"));
        verify(&o, &start, &stock, &params).expect("plonky2's own proof");

        // The witness is the smallest that grinds enough zeros.
        let pre = before_pow(&start, &ours);
        let w = ours.pow_witness.to_canonical_u64();
        assert!(leading_zeros_after(&pre, w) >= case.pow_bits, "{label}");
        assert!((0..w).all(|c| leading_zeros_after(&pre, c) < case.pow_bits), "{label}: a smaller witness exists");

        // The default kernel composition (what a device backend inherits) gives the same proof.
        let kernels = fri::prove_openings(
            &KernelsOnly { break_pairs: false },
            &o.instance,
            &oracles,
            &mut ours_start.clone(),
            &params,
        )
        .expect("kernels-only FRI");
        assert_eq!(kernels, ours, "{label}: kernels-only backend");
        let dual = DualBackend { first: RayonBackend, second: KernelsOnly { break_pairs: false } };
        let dual_proof = fri::prove_openings(&dual, &o.instance, &oracles, &mut ours_start.clone(), &params)
            .unwrap_or_else(|e| panic!("{label}: dual backend: {e}"));
        assert_eq!(dual_proof, ours);

        // Tampered proofs are refused.
        let mut bad = ours.clone();
        bad.final_poly.coeffs[0] += FE::ONE;
        assert!(verify(&o, &start, &bad, &params).is_err(), "{label}: a changed final polynomial verified");
        let mut bad = ours.clone();
        bad.query_round_proofs[0].initial_trees_proof.evals_proofs[1].0[0] += F::ONE;
        assert!(verify(&o, &start, &bad, &params).is_err(), "{label}: a changed opening verified");
        if !ours.query_round_proofs[1].steps.is_empty() {
            let mut bad = ours.clone();
            bad.query_round_proofs[1].steps[0].evals[0] += FE::ONE;
            assert!(verify(&o, &start, &bad, &params).is_err(), "{label}: a changed layer value verified");
        }
    }
}

#[test]
fn fri_refuses_a_misshapen_opening_instance() {
    let case = Case { degree_bits: 4, rate_bits: 1, cap_height: 0, arities: vec![1], pow_bits: 1 };
    let mut rng = StdRng::seed_from_u64(7);
    let mut o = openings(&case, &mut rng);
    let oracles: Vec<&PolynomialBatch<F, Config, D>> = o.oracles.iter().collect();
    // A polynomial the oracles do not hold.
    o.instance.batches[0].polynomials.push(FriPolynomialInfo { oracle_index: 2, polynomial_index: 9 });
    let err = fri::prove_openings(&RayonBackend, &o.instance, &oracles, &mut Transcript::new(), &case.params())
        .expect_err("an unknown polynomial");
    assert!(matches!(err, BackendError::Shape(_)), "{err}");
    // An oracle committed at another rate than FRI's.
    o.instance.batches[0].polynomials.pop();
    let other_rate = openings(&Case { rate_bits: 2, ..case.clone() }, &mut rng);
    let mixed = [oracles[0], oracles[1], &other_rate.oracles[2]];
    let err = fri::prove_openings(&RayonBackend, &o.instance, &mixed, &mut Transcript::new(), &case.params())
        .expect_err("an oracle of another size");
    assert!(matches!(err, BackendError::Shape(_)), "{err}");
    // Parameters for another trace length.
    let other = Case { degree_bits: 5, ..case };
    let err = fri::prove_openings(&RayonBackend, &o.instance, &oracles, &mut Transcript::new(), &other.params())
        .expect_err("a trace of the wrong length");
    assert!(matches!(err, BackendError::Shape(_)), "{err}");
}

#[test]
fn transcript_draws_plonky2s_challenges() {
    let mut rng = StdRng::seed_from_u64(3);
    for round in 0..200 {
        let (mut c, mut t) = (Challenger::<F, PoseidonHash>::new(), Transcript::new());
        let params = CircuitConfig::standard_recursion_config().fri_config.fri_params(rng.gen_range(3..20), false);
        params.observe(&mut c);
        t.observe_fri_params(&params);
        for step in 0..rng.gen_range(0..40) {
            match rng.gen_range(0..7) {
                0 => {
                    let e = F::rand_vec(rng.gen_range(0..20));
                    c.observe_elements(&e);
                    t.observe_elements(&e);
                }
                1 => {
                    let h = HashOut::<F>::rand();
                    c.observe_hash::<PoseidonHash>(h);
                    t.observe_hash(h);
                }
                2 => {
                    let cap =
                        MerkleCap::<F, PoseidonHash>((0..1 << rng.gen_range(0..4)).map(|_| HashOut::rand()).collect());
                    c.observe_cap::<PoseidonHash>(&cap);
                    t.observe_cap(&cap);
                }
                3 => {
                    let e = FE::rand_vec(rng.gen_range(0..6));
                    c.observe_extension_elements::<D>(&e);
                    t.observe_extension_elements(&e);
                }
                4 => assert_eq!(
                    t.get_extension_challenge(),
                    c.get_extension_challenge::<D>(),
                    "round {round} step {step}"
                ),
                5 => {
                    let k = rng.gen_range(0..12);
                    assert_eq!(t.get_n_challenges(k), c.get_n_challenges(k), "round {round} step {step}");
                }
                _ => {
                    // The proof of work's shortcut: the state with the pending inputs, the next slot.
                    let (state, slot) = t.pow_state();
                    let candidate = rng.gen::<u64>() % F::ORDER;
                    let mut after = c.clone();
                    after.observe_element(F::from_canonical_u64(candidate));
                    assert_eq!(
                        transcript::pow_response(&state, slot, candidate),
                        after.get_challenge(),
                        "round {round}"
                    );
                }
            }
        }
        assert_eq!(t.get_challenge(), c.get_challenge(), "round {round}: the last draw");
    }
}

#[test]
fn grind_refuses_searches_off_the_field_and_finds_the_first_witness() {
    let t = Transcript::new();
    let (state, slot) = t.pow_state();
    for (slot, start, count) in [(8, 0, 10), (0, F::ORDER - 5, 10), (0, u64::MAX, 2)] {
        let err = RayonBackend.grind(&state, slot, 4, start, count).expect_err("a bad search");
        assert!(matches!(err, BackendError::Shape(_)), "{err}");
    }
    // The first of several witnesses at 6 bits, the same on every backend.
    let zeros = |c: u64| transcript::pow_response(&state, slot, c).to_canonical_u64().leading_zeros();
    let first = (0..).find(|&c| zeros(c) >= 6).expect("a witness");
    let backends: [&dyn Backend; 2] = [&RayonBackend, &KernelsOnly { break_pairs: false }];
    for backend in backends {
        assert_eq!(backend.grind(&state, slot, 6, 0, first + 1000).expect("grind"), Some(first));
        assert_eq!(backend.grind(&state, slot, 6, 0, first).expect("grind"), None);
    }
    assert_eq!(
        RayonBackend.grind(&state, slot, 6, F::ORDER - 1, 1).expect("the last candidate").is_some(),
        zeros(F::ORDER - 1) >= 6
    );
}
