//! Our plonky2 prover: the steps of plonky2 1.1's `prove`, written against its public API, with
//! every commitment (wires; partial products and Z; quotient chunks), the quotient and FRI's
//! NTTs, trees and proof of work run by a [`Backend`].
//!
//! The transcript ([`Transcript`]) is plonky2's, step for step, so for an unblinded circuit the
//! proof is the one plonky2 makes, up to the FRI proof-of-work nonce (ours is the smallest;
//! plonky2 takes whichever thread finds one first) and what follows from it. plonky2's stock
//! verifier accepts it.
//!
//! Not supported, each refused with [`BackendError::Unsupported`]: lookup tables and zero
//! knowledge (blinding). None of our circuits uses them.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use plonky2::field::extension::Extendable;
use plonky2::field::polynomial::PolynomialCoeffs;
use plonky2::field::types::Field;
use plonky2::fri::oracle::PolynomialBatch;
use plonky2::fri::structure::{FriBatchInfo, FriInstanceInfo, FriOracleInfo, FriPolynomialInfo};
use plonky2::hash::poseidon::PoseidonHash;
use plonky2::iop::witness::{PartialWitness, PartitionWitness, Witness};
use plonky2::plonk::circuit_data::{CommonCircuitData, ProverOnlyCircuitData};
use plonky2::plonk::config::Hasher;
use plonky2::plonk::proof::{OpeningSet, Proof, ProofWithPublicInputs};
use rayon::prelude::*;

use crate::backend::Backend;
use crate::commit::{Config, Held};
use crate::error::{BackendError, Result};
use crate::fri;
use crate::lanes::{isa, width, Isa};
use crate::quotient::{quotient_bits, QuotientInputs, Selectors, MAX_CHALLENGES};
use crate::quotient_x8::{row_products, RowBatch, MAX_STEPS};
use crate::transcript::Transcript;
use crate::witness::{generate_partial_witness, wire_columns, WatchTable};
use crate::F;

/// plonky2's extension degree.
pub const D: usize = 2;

/// The field extension openings live in.
type FE = <F as Extendable<D>>::Extension;

/// A proof with its public inputs, as plonky2's `prove` returns it.
pub type ProofWithInputs = ProofWithPublicInputs<F, Config, D>;

/// How long each step of one proof took.
#[derive(Clone, Debug, Default)]
pub struct StepTimes {
    /// Running the witness generators.
    pub witness: Duration,
    /// The wires commitment (iNTT, LDE, Merkle tree).
    pub wires_commit: Duration,
    /// The permutation argument's partial products and Z.
    pub partial_products: Duration,
    /// Their commitment.
    pub zs_commit: Duration,
    /// The quotient polynomials: constraints on the LDE coset, division by Z_H, iNTT.
    pub quotient: Duration,
    /// The quotient chunks' commitment.
    pub quotient_commit: Duration,
    /// Every polynomial evaluated at ζ (and the Z's at gζ).
    pub openings: Duration,
    /// The FRI proof of those openings: the combined quotient, its LDE, the folding layers'
    /// commitments, the proof of work and the query rounds.
    pub fri: Duration,
}

impl StepTimes {
    /// The whole proof.
    pub fn total(&self) -> Duration {
        self.witness
            + self.wires_commit
            + self.partial_products
            + self.zs_commit
            + self.quotient
            + self.quotient_commit
            + self.openings
            + self.fri
    }

    /// The commitment steps, the ones the backend runs.
    pub fn commitments(&self) -> Duration {
        self.wires_commit + self.zs_commit + self.quotient_commit
    }
}

/// Proves `inputs` for the circuit `(prover, common)` with every commitment made on `backend`.
pub fn prove(
    backend: &dyn Backend,
    prover: &ProverOnlyCircuitData<F, Config, D>,
    common: &CommonCircuitData<F, D>,
    inputs: PartialWitness<F>,
) -> Result<ProofWithInputs> {
    prove_timed(backend, prover, common, inputs).map(|(p, _)| p)
}

/// [`prove`], and how long each step took.
pub fn prove_timed(
    backend: &dyn Backend,
    prover: &ProverOnlyCircuitData<F, Config, D>,
    common: &CommonCircuitData<F, D>,
    inputs: PartialWitness<F>,
) -> Result<(ProofWithInputs, StepTimes)> {
    check_supported(common)?;
    let t = Instant::now();
    let table = WatchTable::cached(prover, common)?;
    let partition = generate_partial_witness(inputs, prover, common, &table)?;
    let generators = t.elapsed();
    let (proof, mut times) = prove_with_partition(backend, prover, common, partition)?;
    times.witness += generators;
    Ok((proof, times))
}

fn check_supported(common: &CommonCircuitData<F, D>) -> Result<()> {
    let config = &common.config;
    if !common.luts.is_empty() || common.num_lookup_polys != 0 {
        return Err(BackendError::Unsupported("lookup tables".into()));
    }
    if config.zero_knowledge {
        return Err(BackendError::Unsupported("zero knowledge (blinded commitments)".into()));
    }
    if quotient_bits(common) > config.fri_config.rate_bits {
        return Err(BackendError::Unsupported("constraints of degree above the FRI rate".into()));
    }
    if common.quotient_degree_factor >= config.num_routed_wires {
        return Err(BackendError::Unsupported("fewer routed wires than the constraint degree".into()));
    }
    Ok(())
}

/// The proof of a witness whose generators have already run: plonky2's
/// `prove_with_partition_witness`. (Generators draw random values for the public-input gate's
/// unused wires, so two runs of the generators give two different, equally valid, proofs.)
pub fn prove_with_partition(
    backend: &dyn Backend,
    prover: &ProverOnlyCircuitData<F, Config, D>,
    common: &CommonCircuitData<F, D>,
    partition: PartitionWitness<'_, F>,
) -> Result<(ProofWithInputs, StepTimes)> {
    check_supported(common)?;
    let config = &common.config;
    let rate_bits = config.fri_config.rate_bits;
    let cap_height = config.fri_config.cap_height;
    let selectors = Selectors::of(common)?;
    let mut times = StepTimes::default();
    let n = common.degree();

    let t = Instant::now();
    let public_inputs = partition.get_targets(&prover.public_inputs);
    let public_inputs_hash = PoseidonHash::hash_no_pad(&public_inputs);
    // Wire columns, one after another: the wires commitment and the permutation argument read them.
    let columns = wire_columns(&partition);
    drop(partition);
    times.witness = t.elapsed();

    let t = Instant::now();
    // Lent: the permutation argument reads the columns after the commitment. The rayon backend
    // transforms a parallel copy; a device backend uploads them from here, with no host copy.
    let wires = Held::commit_values(backend, Cow::Borrowed(&columns), n, rate_bits, cap_height)?;
    times.wires_commit = t.elapsed();

    let mut transcript = Transcript::new();
    transcript.observe_fri_params(&common.fri_params);
    transcript.observe_hash(prover.circuit_digest);
    transcript.observe_hash(public_inputs_hash);
    transcript.observe_cap(&wires.merkle_tree.cap);
    let betas = transcript.get_n_challenges(config.num_challenges);
    let gammas = transcript.get_n_challenges(config.num_challenges);

    let t = Instant::now();
    let zs_values = partial_products_and_zs(prover, common, &columns, &betas, &gammas);
    drop(columns);
    times.partial_products = t.elapsed();

    let t = Instant::now();
    let zs = Held::commit_values(backend, zs_values.into(), n, rate_bits, cap_height)?;
    times.zs_commit = t.elapsed();
    transcript.observe_cap(&zs.merkle_tree.cap);
    let alphas = transcript.get_n_challenges(config.num_challenges);

    let t = Instant::now();
    let inputs = QuotientInputs {
        prover,
        common,
        selectors: &selectors,
        public_inputs_hash,
        wires: &wires,
        zs: &zs,
        betas: &betas,
        gammas: &gammas,
        alphas: &alphas,
    };
    let quotients = quotient_polys(backend, &inputs)?;
    times.quotient = t.elapsed();

    let t = Instant::now();
    let quotient = Held::commit(backend, quotients, rate_bits, cap_height)?;
    times.quotient_commit = t.elapsed();
    transcript.observe_cap(&quotient.merkle_tree.cap);

    let t = Instant::now();
    let zeta = transcript.get_extension_challenge();
    if zeta.exp_power_of_2(common.degree_bits()) == FE::ONE {
        // Probability about n / |F²|; plonky2 refuses the same way.
        return Err(BackendError::DegenerateChallenge);
    }
    let g = FE::primitive_root_of_unity(common.degree_bits());
    let oracles: [&PolynomialBatch<F, Config, D>; 4] = [&prover.constants_sigmas_commitment, &wires, &zs, &quotient];
    let openings = opening_set(backend, zeta, g, oracles, common)?;
    // plonky2's `to_fri_openings` (crate-private): the values at ζ in oracle order, then at gζ.
    for values in [
        &openings.constants,
        &openings.plonk_sigmas,
        &openings.wires,
        &openings.plonk_zs,
        &openings.partial_products,
        &openings.quotient_polys,
        &openings.plonk_zs_next,
    ] {
        transcript.observe_extension_elements(values);
    }
    let instance = fri_instance(common, zeta, g);
    times.openings = t.elapsed();

    let t = Instant::now();
    let opening_proof = fri::prove_openings(backend, &instance, &oracles, &mut transcript, &common.fri_params)?;
    times.fri = t.elapsed();

    let proof = Proof {
        wires_cap: wires.merkle_tree.cap.clone(),
        plonk_zs_partial_products_cap: zs.merkle_tree.cap.clone(),
        quotient_polys_cap: quotient.merkle_tree.cap.clone(),
        openings,
        opening_proof,
    };
    Ok((ProofWithPublicInputs { proof, public_inputs }, times))
}

/// Rows whose permutation-argument denominators share one batch inversion.
const ROWS_PER_INVERSION: usize = 64;

/// The permutation argument's polynomials as values on the subgroup, one after another, in
/// plonky2's order: the `Z` of each challenge, then each challenge's partial products. The
/// products of each row's chunks of numerators and denominators run on vector lanes where the
/// CPU has them ([`row_products`]), else in scalar code; the values are the same.
fn partial_products_and_zs(
    prover: &ProverOnlyCircuitData<F, Config, D>,
    common: &CommonCircuitData<F, D>,
    columns: &[F],
    betas: &[F],
    gammas: &[F],
) -> Vec<F> {
    partial_products_and_zs_on(isa(), prover, common, columns, betas, gammas)
}

/// [`partial_products_and_zs`] with the row products on `isa` (the scalar code where `isa` is
/// the scalar fallback or its lanes do not take the circuit).
fn partial_products_and_zs_on(
    isa: Isa,
    prover: &ProverOnlyCircuitData<F, Config, D>,
    common: &CommonCircuitData<F, D>,
    columns: &[F],
    betas: &[F],
    gammas: &[F],
) -> Vec<F> {
    let n = common.degree();
    let routed = common.config.num_routed_wires;
    let chunk = common.quotient_degree_factor;
    let num_prods = common.num_partial_products;
    let challenges = betas.len();
    // Per row, the products of `chunk` consecutive ratios (numerator / denominator), each as
    // (Π numerators) / (Π denominators): `steps` per row and challenge.
    let steps = routed.div_ceil(chunk);
    let block = ROWS_PER_INVERSION.min(n);
    let beta_k: Vec<F> = betas.iter().flat_map(|&beta| common.k_is[..routed].iter().map(move |&k| beta * k)).collect();
    let lanes = width(isa).is_some_and(|w| {
        isa.supported() && block.is_multiple_of(w) && challenges <= MAX_CHALLENGES && steps <= MAX_STEPS
    });
    // Block by block of rows, each challenge's ratios row by row (challenge `c`, row `r` of the
    // block, chunk `s` at `(c·block + r)·steps + s`), the denominators of the whole block, every
    // challenge, in one batch inversion.
    let mut ratios = vec![F::ZERO; challenges * n * steps];
    ratios.par_chunks_mut(challenges * block * steps).enumerate().for_each(|(b, out)| {
        let first = b * block;
        let mut numerators = vec![F::ONE; out.len()];
        let mut denominators = vec![F::ONE; out.len()];
        if lanes {
            let batch = RowBatch {
                n,
                first,
                len: block,
                wires: columns,
                sigmas: &prover.sigmas,
                xs: &prover.subgroup,
                beta_k: &beta_k,
                betas,
                gammas,
                routed,
                chunk,
            };
            row_products(isa, &batch, &mut numerators, &mut denominators);
        } else {
            for c in 0..challenges {
                let (beta, gamma) = (betas[c], gammas[c]);
                for r in 0..block {
                    let i = first + r;
                    let (x, sigmas) = (prover.subgroup[i], &prover.sigmas[i]);
                    for s in 0..steps {
                        let (mut num, mut den) = (F::ONE, F::ONE);
                        for j in s * chunk..((s + 1) * chunk).min(routed) {
                            let w = columns[j * n + i];
                            num *= w + beta_k[c * routed + j] * x + gamma;
                            den *= w + beta * sigmas[j] + gamma;
                        }
                        numerators[(c * block + r) * steps + s] = num;
                        denominators[(c * block + r) * steps + s] = den;
                    }
                }
            }
        }
        let inverses = F::batch_multiplicative_inverse(&denominators);
        for ((o, num), inv) in out.iter_mut().zip(numerators).zip(inverses) {
            *o = num * inv;
        }
    });
    let mut out = vec![F::ZERO; challenges * (num_prods + 1) * n];
    let (zs_out, pp_out) = out.split_at_mut(challenges * n);
    for (c, (z_poly, pp_polys)) in zs_out.chunks_mut(n).zip(pp_out.chunks_mut(num_prods * n)).enumerate() {
        // Running products across rows: row i holds Z(ω^i) and the partial products that lead
        // from it to Z(ω^{i+1}).
        let mut z = F::ONE;
        for i in 0..n {
            let start = ((i / block * challenges + c) * block + i % block) * steps;
            z_poly[i] = z;
            let mut acc = z;
            for (s, &p) in ratios[start..start + steps].iter().enumerate() {
                acc *= p;
                if s < num_prods {
                    pp_polys[s * n + i] = acc;
                }
            }
            z = acc;
        }
    }
    out
}

/// The quotient polynomials `(Σ αⁱ·termᵢ) / Z_H` of each challenge, split into chunks of degree
/// `n`, in plonky2's order (challenge by challenge): the backend's coefficients
/// ([`Backend::quotient_coeffs`]), each polynomial's past its degree checked to be zero.
fn quotient_polys(backend: &dyn Backend, q: &QuotientInputs<'_>) -> Result<Vec<PolynomialCoeffs<F>>> {
    let common = q.common;
    let n = common.degree();
    let size = q.size();
    let flat = backend.quotient_coeffs(q)?;
    if flat.len() != common.config.num_challenges * size {
        return Err(BackendError::Shape(format!("{} quotient coefficients for {size} points", flat.len())));
    }
    let quotient_degree = common.quotient_degree();
    let mut chunks = Vec::with_capacity(common.config.num_challenges * common.quotient_degree_factor);
    for (c, poly) in flat.chunks(size).enumerate() {
        if poly[quotient_degree..].iter().any(|v| *v != F::ZERO) {
            return Err(BackendError::Unsatisfied(format!(
                "the vanishing polynomial of challenge {c} is not divisible by Z_H: the witness breaks a constraint"
            )));
        }
        chunks.extend(poly[..quotient_degree].chunks(n).map(|p| PolynomialCoeffs::new(p.to_vec())));
    }
    Ok(chunks)
}

/// plonky2's `OpeningSet::new`: every polynomial of the four oracles at ζ, and the Z and partial
/// products' polynomials at gζ, each from wherever its coefficients are ([`Backend::evaluate`]).
/// plonky2 copies each polynomial into the extension field and runs Horner's rule there; the
/// backends take each value as the dot product of the coefficients with the powers of the point,
/// computed once per point: a base-by-extension product per coefficient in place of an extension
/// product, and no copies. The field's arithmetic is exact, so the values are plonky2's.
fn opening_set(
    backend: &dyn Backend,
    zeta: FE,
    g: FE,
    [constants_sigmas, wires, zs, quotient]: [&PolynomialBatch<F, Config, D>; 4],
    common: &CommonCircuitData<F, D>,
) -> Result<OpeningSet<F, D>> {
    let at_zeta = |c: &PolynomialBatch<F, Config, D>| -> Result<Vec<FE>> {
        backend.evaluate(c, &[zeta])?.pop().ok_or_else(|| BackendError::Shape("no values at ζ".into()))
    };
    let constants_sigmas_eval = at_zeta(constants_sigmas)?;
    let [zs_eval, zs_next_eval]: [Vec<FE>; 2] = backend
        .evaluate(zs, &[zeta, g * zeta])?
        .try_into()
        .map_err(|_| BackendError::Shape("Z's values at ζ and gζ".into()))?;
    let width = |c: &PolynomialBatch<F, Config, D>| c.polynomials.len();
    let checked = |values: Vec<FE>, c: &PolynomialBatch<F, Config, D>| -> Result<Vec<FE>> {
        if values.len() != width(c) {
            return Err(BackendError::Shape(format!("{} values of {} polynomials", values.len(), width(c))));
        }
        Ok(values)
    };
    let constants_sigmas_eval = checked(constants_sigmas_eval, constants_sigmas)?;
    let (zs_eval, zs_next_eval) = (checked(zs_eval, zs)?, checked(zs_next_eval, zs)?);
    Ok(OpeningSet {
        constants: constants_sigmas_eval[common.constants_range()].to_vec(),
        plonk_sigmas: constants_sigmas_eval[common.sigmas_range()].to_vec(),
        wires: checked(at_zeta(wires)?, wires)?,
        plonk_zs: zs_eval[common.zs_range()].to_vec(),
        plonk_zs_next: zs_next_eval[common.zs_range()].to_vec(),
        partial_products: zs_eval[common.partial_products_range()].to_vec(),
        quotient_polys: checked(at_zeta(quotient)?, quotient)?,
        // No lookups: `check_supported` refuses them.
        lookup_zs: Vec::new(),
        lookup_zs_next: Vec::new(),
    })
}

/// plonky2's `get_fri_instance` (crate-private): every polynomial opened at ζ, the Z's also at gζ.
/// The oracles' `blinding` flags are plonky2's `PlonkOracle` constants.
fn fri_instance(common: &CommonCircuitData<F, D>, zeta: FE, g: FE) -> FriInstanceInfo<F, D> {
    let num_preprocessed = common.sigmas_range().end;
    let num_zs_pp = common.config.num_challenges * (1 + common.num_partial_products);
    let num_quotient = common.config.num_challenges * common.quotient_degree_factor;
    let all = [
        FriPolynomialInfo::from_range(0, 0..num_preprocessed),
        FriPolynomialInfo::from_range(1, 0..common.config.num_wires),
        FriPolynomialInfo::from_range(2, 0..num_zs_pp),
        FriPolynomialInfo::from_range(3, 0..num_quotient),
    ]
    .concat();
    FriInstanceInfo {
        oracles: vec![
            FriOracleInfo { num_polys: num_preprocessed, blinding: false },
            FriOracleInfo { num_polys: common.config.num_wires, blinding: true },
            FriOracleInfo { num_polys: num_zs_pp, blinding: true },
            FriOracleInfo { num_polys: num_quotient, blinding: true },
        ],
        batches: vec![
            FriBatchInfo { point: zeta, polynomials: all },
            FriBatchInfo { point: g * zeta, polynomials: FriPolynomialInfo::from_range(2, common.zs_range()) },
        ],
    }
}

#[cfg(test)]
mod tests {
    use plonky2::field::types::Sample;
    use plonky2::hash::poseidon::PoseidonHash;
    use plonky2::iop::witness::{PartialWitness, WitnessWrite};
    use plonky2::plonk::circuit_builder::CircuitBuilder;
    use plonky2::plonk::circuit_data::CircuitConfig;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    /// The row products on each instruction set this CPU has give the scalar code's Z and
    /// partial products, on a circuit of hashes and arithmetic whose wires are copied about
    /// (the permutation argument has work to do), with random challenges; and the scalar code's
    /// Z closes the cycle (`Z(ω^n) = 1`, the permutation argument holding), which a wrong
    /// ratio breaks.
    #[test]
    fn partial_products_on_lanes_equal_the_scalar_code() {
        let mut b = CircuitBuilder::<F, D>::new(CircuitConfig::standard_recursion_config());
        let inputs = b.add_virtual_targets(4);
        let mut h = b.hash_n_to_hash_no_pad::<PoseidonHash>(inputs.clone());
        for i in 0..150 {
            let x = b.mul_add(h.elements[0], inputs[i % 4], h.elements[1]);
            h = b.hash_n_to_hash_no_pad::<PoseidonHash>(vec![x, h.elements[2], h.elements[3]]);
        }
        b.register_public_inputs(&h.elements);
        let data = b.build::<Config>();
        let (prover, common) = (&data.prover_only, &data.common);
        let mut rng = StdRng::seed_from_u64(15);
        let mut pw = PartialWitness::new();
        for &t in &inputs {
            pw.set_target(t, F::sample(&mut rng)).expect("set");
        }
        let table = WatchTable::of(prover, common).expect("table");
        let columns = wire_columns(&generate_partial_witness(pw, prover, common, &table).expect("witness"));
        let betas: Vec<F> = (0..common.config.num_challenges).map(|_| F::sample(&mut rng)).collect();
        let gammas: Vec<F> = (0..common.config.num_challenges).map(|_| F::sample(&mut rng)).collect();
        let scalar = partial_products_and_zs_on(Isa::Scalar, prover, common, &columns, &betas, &gammas);
        let n = common.degree();
        assert!(n >= 2 * ROWS_PER_INVERSION, "more than one block of rows");
        // Z of each challenge closes the cycle: its last row's product of ratios is back to one.
        let (routed, chunk) = (common.config.num_routed_wires, common.quotient_degree_factor);
        for c in 0..betas.len() {
            let mut z = scalar[c * n + n - 1];
            for j in 0..routed {
                let (x, w) = (prover.subgroup[n - 1], columns[j * n + n - 1]);
                z *= (w + betas[c] * common.k_is[j] * x + gammas[c])
                    / (w + betas[c] * prover.sigmas[n - 1][j] + gammas[c]);
            }
            assert_eq!(z, F::ONE, "challenge {c}: {routed} wires in chunks of {chunk}");
        }
        for isa in [Isa::Avx512, Isa::Avx2] {
            if !isa.supported() {
                eprintln!("{} skipped: this CPU lacks it", isa.name());
                continue;
            }
            let lanes = partial_products_and_zs_on(isa, prover, common, &columns, &betas, &gammas);
            assert_eq!(lanes.len(), scalar.len());
            if let Some(i) = (0..lanes.len()).find(|&i| lanes[i] != scalar[i]) {
                panic!("{}: value {i} of {} (row {}, polynomial {})", isa.name(), lanes.len(), i % n, i / n);
            }
        }
    }
}
