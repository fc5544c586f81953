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
use crate::quotient::{quotient_bits, QuotientInputs, Selectors};
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
    let table = WatchTable::cached(prover)?;
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
/// plonky2's order: the `Z` of each challenge, then each challenge's partial products.
fn partial_products_and_zs(
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
    let num_challenges = betas.len();
    let mut out = vec![F::ZERO; num_challenges * (num_prods + 1) * n];
    let (zs_out, pp_out) = out.split_at_mut(num_challenges * n);
    for (c, (z_poly, pp_polys)) in zs_out.chunks_mut(n).zip(pp_out.chunks_mut(num_prods * n)).enumerate() {
        let (beta, gamma) = (betas[c], gammas[c]);
        // Per row, the products of `chunk` consecutive ratios (numerator / denominator), each
        // as (Π numerators) / (Π denominators), the divisions of a block of rows in one batch
        // inversion.
        let chunks = routed.div_ceil(chunk);
        let mut chunk_products = vec![F::ZERO; n * chunks];
        chunk_products.par_chunks_mut(ROWS_PER_INVERSION * chunks).enumerate().for_each(|(block, out)| {
            let first = block * ROWS_PER_INVERSION;
            let mut numerators = Vec::with_capacity(out.len());
            let mut denominators = Vec::with_capacity(out.len());
            for i in first..first + out.len() / chunks {
                let x = prover.subgroup[i];
                let sigmas = &prover.sigmas[i];
                for k in 0..chunks {
                    let (mut num, mut den) = (F::ONE, F::ONE);
                    for j in k * chunk..((k + 1) * chunk).min(routed) {
                        let w = columns[j * n + i];
                        num *= w + beta * common.k_is[j] * x + gamma;
                        den *= w + beta * sigmas[j] + gamma;
                    }
                    numerators.push(num);
                    denominators.push(den);
                }
            }
            let inverses = F::batch_multiplicative_inverse(&denominators);
            for ((o, num), inv) in out.iter_mut().zip(numerators).zip(inverses) {
                *o = num * inv;
            }
        });
        // Running products across rows: row i holds Z(ω^i) and the partial products that lead
        // from it to Z(ω^{i+1}).
        let mut z = F::ONE;
        for (i, products) in chunk_products.chunks(chunks).enumerate() {
            z_poly[i] = z;
            let mut acc = z;
            for (k, &p) in products.iter().enumerate() {
                acc *= p;
                if k < num_prods {
                    pp_polys[k * n + i] = acc;
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
