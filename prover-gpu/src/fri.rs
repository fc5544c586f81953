//! plonky2's opening proof (`PolynomialBatch::prove_openings` and `fri_proof`), written against
//! its public API, with FRI's FFTs and Merkle trees on a [`Backend`].
//!
//! The steps and the transcript are plonky2 1.1's:
//! 1. α; the polynomials opened at each point combined by powers of α, each batch's combination
//!    divided by `X − z`, the batches summed (host, plonky2's `ReducingFactor` arithmetic, in parallel blocks);
//! 2. that polynomial's LDE on `F::coset_shift()·⟨ω⟩`: two coset NTTs on the backend, one per
//!    component of the quadratic extension (the roots and the shift are base-field elements);
//! 3. the commit phase: the values in bit-reversed order, `arity` of them per leaf, the Merkle
//!    tree on the backend, β, the coefficients folded by powers of β, the next values by the
//!    backend's NTT on the coset of `g^arity`; then the final polynomial;
//! 4. the proof of work, searched on the backend from our own [`Transcript`]'s state (plonky2's
//!    is crate-private), in order, so the witness is the smallest one (plonky2 takes whichever
//!    thread finds one first, so its witness can differ; both verify);
//! 5. the query rounds: every oracle's rows and Merkle paths at the queried indices, read in
//!    one call each through the backend (which may have kept the trees,
//!    [`crate::backend::Leaves`]), and the layers' openings.

use plonky2::field::extension::{unflatten, Extendable, FieldExtension};
use plonky2::field::polynomial::PolynomialCoeffs;
use plonky2::field::types::{Field, Field64, PrimeField64};
use plonky2::fri::oracle::PolynomialBatch;
use plonky2::fri::proof::{FriInitialTreeProof, FriProof, FriQueryRound, FriQueryStep};
use plonky2::fri::structure::{FriBatchInfo, FriInstanceInfo};
use plonky2::fri::FriParams;
use plonky2::hash::merkle_proofs::MerkleProof;
use plonky2::hash::merkle_tree::{MerkleCap, MerkleTree};
use plonky2::hash::poseidon::PoseidonHash;
use plonky2::plonk::plonk_common::reduce_with_powers;
use rayon::prelude::*;

use crate::backend::Backend;
use crate::commit::{shape, Config};
use crate::error::{BackendError, Result};
use crate::layout::reverse_bits;

use crate::transcript::Transcript;
use crate::F;

const D: usize = 2;
type FE = <F as Extendable<D>>::Extension;
type Tree = MerkleTree<F, PoseidonHash>;

/// The FRI proof plonky2's `PolynomialBatch::prove_openings` makes for `instance` over
/// `oracles` (no final-polynomial padding, no extra query steps: plonky2's `prove` passes
/// `None` for both), with the LDE, the layers' NTTs and the layers' Merkle trees on `backend`.
pub fn prove_openings(
    backend: &dyn Backend,
    instance: &FriInstanceInfo<F, D>,
    oracles: &[&PolynomialBatch<F, Config, D>],
    transcript: &mut Transcript,
    params: &FriParams,
) -> Result<FriProof<F, PoseidonHash, D>> {
    let rate_bits = params.config.rate_bits;
    let final_poly = combined_quotient(backend, instance, oracles, transcript)?;
    let lde = final_poly.lde(rate_bits);
    let n = lde.len();
    if n != 1 << (params.degree_bits + rate_bits) {
        return Err(BackendError::Shape(format!(
            "an opening polynomial of {n} LDE coefficients for FRI over 2^{} points",
            params.degree_bits + rate_bits
        )));
    }
    // The query rounds open every oracle at the same index of this LDE.
    if let Some(o) = oracles.iter().find(|o| shape(o).rows != n) {
        return Err(BackendError::Shape(format!("an oracle of {} leaves for FRI over {n} points", shape(o).rows)));
    }
    let values = ext_coset_ntt(backend, &lde.coeffs, F::coset_shift())?;
    let (layers, final_coeffs) = commit_phase(backend, lde.coeffs, values, transcript, params)?;
    let pow_witness = proof_of_work(backend, transcript, params.config.proof_of_work_bits)?;
    let indices: Vec<usize> = transcript
        .get_n_challenges(params.config.num_query_rounds)
        .iter()
        .map(|r| r.to_canonical_u64() as usize % n)
        .collect();
    // Each oracle's rows and Merkle paths at every query at once, from wherever its tree is (a
    // device backend keeps the wires, Z and quotient trees: these are all the host reads of them).
    let opened = oracles
        .iter()
        .map(|o| {
            let rows = backend.leaf_rows(&o.merkle_tree, shape(o), &indices)?;
            let paths = backend.merkle_paths(&o.merkle_tree, shape(o), &indices)?;
            if rows.len() != indices.len() || paths.len() != indices.len() {
                return Err(BackendError::Shape(format!(
                    "{} leaf rows and {} paths for {} queries",
                    rows.len(),
                    paths.len(),
                    indices.len()
                )));
            }
            Ok((rows, paths))
        })
        .collect::<Result<Vec<_>>>()?;
    let query_round_proofs = indices
        .par_iter()
        .enumerate()
        .map(|(q, &x_index)| {
            let initial = opened.iter().map(|(rows, paths)| (rows[q].clone(), paths[q].clone())).collect();
            query_round(initial, &layers, x_index, params)
        })
        .collect();
    Ok(FriProof {
        commit_phase_merkle_caps: layers.iter().map(|t| t.cap.clone()).collect(),
        query_round_proofs,
        final_poly: final_coeffs,
        pow_witness,
    })
}

/// `Σ_i α^{k_i}·(F_i(X) − F_i(z_i)) / (X − z_i)` over the instance's batches, `F_i` the batch's
/// polynomials combined by powers of α: plonky2's (`ReducingFactor::reduce_polys_base`, then
/// `shift_poly` between batches), so the coefficients are its. plonky2 builds one extension copy
/// of each polynomial and sums them one after another on one thread; here each oracle's share of
/// a batch is summed by the backend where that oracle's coefficients are ([`Backend::combine`]),
/// and the shares added (the same values: the field's arithmetic is exact).
fn combined_quotient(
    backend: &dyn Backend,
    instance: &FriInstanceInfo<F, D>,
    oracles: &[&PolynomialBatch<F, Config, D>],
    transcript: &mut Transcript,
) -> Result<PolynomialCoeffs<FE>> {
    let alpha = transcript.get_extension_challenge();
    let mut final_poly = PolynomialCoeffs::empty();
    for FriBatchInfo { point, polynomials } in &instance.batches {
        // The polynomial at position k of the batch takes α^k: grouped by oracle.
        let mut shares: Vec<(Vec<usize>, Vec<FE>)> = vec![(Vec::new(), Vec::new()); oracles.len()];
        for (p, power) in polynomials.iter().zip(alpha.powers()) {
            let share = shares.get_mut(p.oracle_index).ok_or_else(|| {
                BackendError::Shape(format!("oracle {} is not among the {} oracles", p.oracle_index, oracles.len()))
            })?;
            share.0.push(p.polynomial_index);
            share.1.push(power);
        }
        let mut combined: Vec<FE> = Vec::new();
        for (oracle, (indices, powers)) in oracles.iter().zip(&shares) {
            if indices.is_empty() {
                continue;
            }
            let share = backend.combine(oracle, indices, powers)?;
            if combined.is_empty() {
                combined = share;
            } else if share.len() != combined.len() {
                return Err(BackendError::Shape(format!(
                    "oracles of {} and {} coefficients",
                    combined.len(),
                    share.len()
                )));
            } else {
                combined.par_iter_mut().zip(share).for_each(|(c, s)| *c += s);
            }
        }
        let mut quotient = PolynomialCoeffs::new(combined).divide_by_linear(*point);
        quotient.coeffs.push(FE::ZERO); // back to a power of two
        final_poly *= alpha.exp_u64(polynomials.len() as u64);
        final_poly += quotient;
    }
    Ok(final_poly)
}

/// The values `v_i = Σ_j c_j·(shift·ω^i)^j` of an extension-field polynomial, natural order:
/// a coset NTT of each component on the backend.
pub fn ext_coset_ntt(backend: &dyn Backend, coeffs: &[FE], shift: F) -> Result<Vec<FE>> {
    let n = coeffs.len();
    let mut flat = vec![F::ZERO; 2 * n];
    let (re, im) = flat.split_at_mut(n);
    re.par_iter_mut().zip(im.par_iter_mut()).zip(coeffs.par_iter()).for_each(|((a, b), c)| {
        [*a, *b] = c.to_basefield_array();
    });
    backend.coset_ntt_batch(&mut flat, n, shift)?;
    let (re, im) = flat.split_at(n);
    Ok(re.par_iter().zip(im.par_iter()).map(|(a, b)| FE::from_basefield_array([*a, *b])).collect())
}

/// The commit phase: each layer's tree, then the final polynomial, observed as plonky2 does.
fn commit_phase(
    backend: &dyn Backend,
    mut coeffs: Vec<FE>,
    mut values: Vec<FE>,
    transcript: &mut Transcript,
    params: &FriParams,
) -> Result<(Vec<Tree>, PolynomialCoeffs<FE>)> {
    let cap_height = params.config.cap_height;
    let mut layers = Vec::with_capacity(params.reduction_arity_bits.len());
    let mut shift = F::MULTIPLICATIVE_GROUP_GENERATOR;
    for (step, &arity_bits) in params.reduction_arity_bits.iter().enumerate() {
        let arity = 1usize << arity_bits;
        let log_n = values.len().trailing_zeros() as usize;
        // Leaf `l` holds the values at bit-reversed positions `l·arity .. (l+1)·arity`, flattened.
        let width = D * arity;
        let mut rows = vec![F::ZERO; values.len() * D];
        rows.par_chunks_mut(D).enumerate().for_each(|(i, r)| {
            r.copy_from_slice(&FieldExtension::<D>::to_basefield_array(&values[reverse_bits(i, log_n)]));
        });
        let (digests, cap) = backend.merkle_tree(&rows, width, cap_height)?;
        let leaves = rows.par_chunks(width).map(<[F]>::to_vec).collect();
        let tree = MerkleTree { leaves, digests, cap: MerkleCap(cap) };
        transcript.observe_cap(&tree.cap);
        layers.push(tree);

        let beta = transcript.get_extension_challenge();
        // P(X) = Σ_{i<arity} X^i·P_i(X^arity) becomes Σ_i β^i·P_i(X).
        coeffs = coeffs.par_chunks_exact(arity).map(|c| reduce_with_powers(c, beta)).collect();
        shift = shift.exp_u64(arity as u64);
        // plonky2 also takes the values after the last fold; nothing reads them.
        if step + 1 < params.reduction_arity_bits.len() {
            values = ext_coset_ntt(backend, &coeffs, shift)?;
        }
    }
    // The coefficients past the degree bound are zero for an honest prover.
    coeffs.truncate(coeffs.len() >> params.config.rate_bits);
    transcript.observe_extension_elements(&coeffs);
    Ok((layers, PolynomialCoeffs::new(coeffs)))
}

/// Candidates handed to the backend's search at once: about one expected witness's worth at
/// 16 bits, in one launch on a device; rayon stops at the first hit within it.
const POW_BLOCK: u64 = 1 << 16;

/// The smallest `w` whose challenge after observing `w` has `bits` leading zeros (plonky2
/// counts them in the canonical 64-bit form, so Goldilocks adds none), searched on the
/// backend, then observed and drawn as plonky2's prover leaves the transcript.
fn proof_of_work(backend: &dyn Backend, transcript: &mut Transcript, bits: u32) -> Result<F> {
    if bits > F::BITS as u32 {
        return Err(BackendError::Unsupported(format!("a proof of work of {bits} bits")));
    }
    let min_leading_zeros = bits + (64 - F::BITS as u32);
    let (state, slot) = transcript.pow_state();
    let mut start = 0u64;
    let witness = loop {
        let count = POW_BLOCK.min(F::ORDER - start);
        if let Some(w) = backend.grind(&state, slot, min_leading_zeros, start, count)? {
            break F::from_canonical_u64(w);
        }
        start += count;
        if start == F::ORDER {
            return Err(BackendError::Unsupported(format!("no proof-of-work witness of {bits} bits exists")));
        }
    };
    transcript.observe_element(witness);
    let response = transcript.get_challenge().to_canonical_u64().leading_zeros();
    if response < min_leading_zeros {
        return Err(BackendError::Mismatch {
            kernel: "grind",
            detail: format!("witness {witness} gives {response} leading zeros, {min_leading_zeros} needed"),
        });
    }
    Ok(witness)
}

/// One query round at `x_index` of the LDE: plonky2's `fri_prover_query_round`, given each
/// oracle's row at `x_index` with its Merkle path.
fn query_round(
    evals_proofs: Vec<(Vec<F>, MerkleProof<F, PoseidonHash>)>,
    layers: &[Tree],
    mut x_index: usize,
    params: &FriParams,
) -> FriQueryRound<F, PoseidonHash, D> {
    let steps = layers
        .iter()
        .zip(&params.reduction_arity_bits)
        .map(|(tree, &arity_bits)| {
            x_index >>= arity_bits;
            FriQueryStep { evals: unflatten::<F, D>(tree.get(x_index)), merkle_proof: tree.prove(x_index) }
        })
        .collect();
    FriQueryRound { initial_trees_proof: FriInitialTreeProof { evals_proofs }, steps }
}
