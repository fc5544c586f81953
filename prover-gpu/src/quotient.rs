//! The quotient step's heavy part: the combined vanishing terms `Σ αⁱ·termᵢ / Z_H` of every
//! challenge at every point of the quotient coset, plonky2's `eval_vanishing_poly_base_batch`.
//!
//! One computation, three ways. [`QuotientInputs::values_on_cpu_with`] runs plonky2's own gates
//! (`eval_filtered_base_batch`, [`CpuGates::Plonky2`]) with rayon: the reference.
//! [`GateProgram`] describes the same constraints, the gates our circuits use, each with its
//! selector filter, to two evaluators of our own: the rayon backend's, on vector lanes
//! ([`crate::quotient_x8`], which [`QuotientInputs::values_on_cpu`] takes where it can), and the
//! CUDA C in `cuda/quotient.cuh`, for which [`QuotientKernelArgs`] packs every input
//! that code reads into flat arrays, except the three commitments' leaves, which the caller passes
//! as it holds them ([`QuotientInputs::trees`], row after row; on a device, where the commitments
//! left them), so a device (or the host C compiler, in the tests) evaluates exactly what the CPU
//! does. A circuit with a gate the C does not know is refused with
//! [`BackendError::Unsupported`], and the CUDA backend falls back to the CPU for it.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use plonky2::field::types::{Field, PrimeField64};
use plonky2::field::zero_poly_coset::ZeroPolyOnCoset;
use plonky2::fri::oracle::PolynomialBatch;
use plonky2::gates::arithmetic_base::ArithmeticGate;
use plonky2::gates::arithmetic_extension::ArithmeticExtensionGate;
use plonky2::gates::base_sum::BaseSumGate;
use plonky2::gates::constant::ConstantGate;
use plonky2::gates::coset_interpolation::CosetInterpolationGate;
use plonky2::gates::exponentiation::ExponentiationGate;
use plonky2::gates::multiplication_extension::MulExtensionGate;
use plonky2::gates::noop::NoopGate;
use plonky2::gates::poseidon::PoseidonGate;
use plonky2::gates::poseidon_mds::PoseidonMdsGate;
use plonky2::gates::public_input::PublicInputGate;
use plonky2::gates::random_access::RandomAccessGate;
use plonky2::gates::reducing::ReducingGate;
use plonky2::gates::reducing_extension::ReducingExtensionGate;
use plonky2::hash::hash_types::HashOut;
use plonky2::hash::merkle_tree::MerkleTree;
use plonky2::plonk::circuit_data::{CommonCircuitData, ProverOnlyCircuitData};
use plonky2::plonk::vars::EvaluationVarsBaseBatch;
use rayon::prelude::*;
use serde::Deserialize;

use crate::backend::{host_leaves, Backend, Shape};
use crate::commit::{shape, Config};
use crate::error::{BackendError, Result};
use crate::gates::RangeCheckGate;
use crate::lanes::{isa, width, Isa};
use crate::layout::reverse_bits;
use crate::quotient_x8::{add_gate_terms, combine_terms, PointBatch, TermBatch, MAX_STEPS};
use crate::F;

/// plonky2's extension degree.
const D: usize = 2;

/// Points per batch of plonky2's gate evaluation.
const CPU_BATCH: usize = 32;

/// `Σ a_i·b_i`: the 128-bit products summed as integers (with a count of the sums' wraps past
/// 2^128) and reduced once, so no product waits for the one before it.
fn dot(a: &[F], b: &[F]) -> F {
    let (mut sum, mut wraps) = (0u128, 0u64);
    for (x, y) in a.iter().zip(b) {
        let product = u128::from(x.to_noncanonical_u64()) * u128::from(y.to_noncanonical_u64());
        let (s, wrapped) = sum.overflowing_add(product);
        sum = s;
        wraps += u64::from(wrapped);
    }
    // 2^128 ≡ −2^32 (mod p): 2^64 ≡ 2^32 − 1, squared.
    F::from_noncanonical_u128(sum) - F::from_canonical_u64(wraps) * F::from_canonical_u64(1 << 32)
}

/// Which gates share which selector polynomial: plonky2's `SelectorsInfo`, whose fields are
/// crate-private in plonky2 1.1. It derives `Serialize`, so it is read back through serde.
#[derive(Clone, Debug, Deserialize)]
pub struct Selectors {
    selector_indices: Vec<usize>,
    groups: Vec<Range<usize>>,
}

impl Selectors {
    /// The selector layout of `common`.
    pub fn of(common: &CommonCircuitData<F, D>) -> Result<Self> {
        let value = serde_json::to_value(&common.selectors_info)
            .map_err(|e| BackendError::Unsupported(format!("selectors of this circuit: {e}")))?;
        let s: Selectors = serde_json::from_value(value)
            .map_err(|e| BackendError::Unsupported(format!("selectors of this plonky2 version: {e}")))?;
        let ok = s.selector_indices.len() == common.gates.len()
            && s.groups.len() == common.selectors_info.num_selectors()
            && s.selector_indices.iter().all(|&i| i < s.groups.len())
            && s.groups
                .iter()
                .enumerate()
                .all(|(k, g)| g.start < g.end && (g.start..g.end).all(|gate| s.selector_indices.get(gate) == Some(&k)));
        if !ok {
            return Err(BackendError::Unsupported("selector layout does not match the gates".into()));
        }
        Ok(s)
    }
}

/// A commitment's LDE as the quotient step reads it: polynomial `j` at LDE point `i` (natural
/// order), wherever the commitment's leaves are on the host.
#[derive(Clone, Copy, Debug)]
pub enum LdeView<'a> {
    /// plonky2's leaves: one row per point, the rows in bit-reversed order.
    Leaves(&'a [Vec<F>]),
    /// One vector per polynomial, in natural order: the leaves as the rayon backend keeps them
    /// ([`crate::cpu`]), where the quotient's batches of neighbouring points are contiguous.
    Columns(&'a [Vec<F>]),
}

impl LdeView<'_> {
    /// Whether this is an LDE of `rows` points of `width` polynomials.
    fn has_shape(&self, rows: usize, width: usize) -> bool {
        match self {
            LdeView::Leaves(leaves) => leaves.len() == rows && leaves.iter().all(|l| l.len() == width),
            LdeView::Columns(columns) => columns.len() == width && columns.iter().all(|c| c.len() == rows),
        }
    }

    /// Polynomial `j` at point `i`.
    fn value(&self, j: usize, i: usize) -> F {
        match self {
            LdeView::Leaves(leaves) => leaves[reverse_bits(i, leaves.len().trailing_zeros() as usize)][j],
            LdeView::Columns(columns) => columns[j][i],
        }
    }

    /// Polynomials `polys` at points `first·step, (first + 1)·step, …` (`len` points), one
    /// polynomial after another into `out` (`out[(j − polys.start)·len + k]`), as
    /// `EvaluationVarsBaseBatch` and the lanes want them.
    fn gather(&self, polys: Range<usize>, first: usize, step: usize, len: usize, out: &mut [F]) {
        match self {
            LdeView::Leaves(leaves) => {
                let bits = leaves.len().trailing_zeros() as usize;
                for k in 0..len {
                    let row = &leaves[reverse_bits((first + k) * step, bits)][polys.clone()];
                    for (j, &v) in row.iter().enumerate() {
                        out[j * len + k] = v;
                    }
                }
            }
            LdeView::Columns(columns) => {
                for (column, out) in columns[polys].iter().zip(out.chunks_mut(len)) {
                    if step == 1 {
                        out.copy_from_slice(&column[first..first + len]);
                    } else {
                        out.iter_mut().enumerate().for_each(|(k, o)| *o = column[(first + k) * step]);
                    }
                }
            }
        }
    }

    /// Polynomials `polys` at point `i`, into `out`.
    fn row_into(&self, polys: Range<usize>, i: usize, out: &mut Vec<F>) {
        out.clear();
        match self {
            LdeView::Leaves(leaves) => {
                out.extend_from_slice(&leaves[reverse_bits(i, leaves.len().trailing_zeros() as usize)][polys])
            }
            LdeView::Columns(columns) => out.extend(columns[polys].iter().map(|c| c[i])),
        }
    }
}

/// How [`QuotientInputs::values_on_cpu_with`] evaluates the terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuGates {
    /// plonky2's own `eval_filtered_base_batch` for the gates, one point at a time, and scalar
    /// code for the rest: the reference.
    Plonky2,
    /// Everything on [`crate::quotient_x8`]'s lanes, on this vector instruction set.
    Lanes(Isa),
}

/// Everything the vanishing terms read: the circuit, the wires and Z commitments, the challenges.
pub struct QuotientInputs<'a> {
    /// The circuit's prover data (constants and sigmas commitment).
    pub prover: &'a ProverOnlyCircuitData<F, Config, D>,
    /// The circuit.
    pub common: &'a CommonCircuitData<F, D>,
    /// Its selector layout.
    pub selectors: &'a Selectors,
    /// The hash of the public inputs (the public-input gate's constraint).
    pub public_inputs_hash: HashOut<F>,
    /// The wires commitment.
    pub wires: &'a PolynomialBatch<F, Config, D>,
    /// The Z and partial-products commitment.
    pub zs: &'a PolynomialBatch<F, Config, D>,
    /// The permutation challenges β, γ and the combining challenges α, one per challenge round.
    pub betas: &'a [F],
    /// See `betas`.
    pub gammas: &'a [F],
    /// See `betas`.
    pub alphas: &'a [F],
}

/// ⌈log2 quotient_degree_factor⌉: the quotient lives on a coset 2^quotient_bits times the trace.
pub fn quotient_bits(common: &CommonCircuitData<F, D>) -> usize {
    common.quotient_degree_factor.next_power_of_two().trailing_zeros() as usize
}

impl QuotientInputs<'_> {
    /// Points of the quotient coset: `n·2^quotient_bits`.
    pub fn size(&self) -> usize {
        self.common.degree() << quotient_bits(self.common)
    }

    /// The inputs fit the circuit: one β, γ, α per challenge round, the coset inside the LDE,
    /// commitments of the circuit's widths over the whole LDE, their leaves on the host or kept by
    /// a backend. (The fields are public, so this is checked here rather than trusted.) The CPU's
    /// evaluation checks its views of the leaves instead ([`LdeView::has_shape`]).
    fn check(&self) -> Result<()> {
        // Each commitment's shape is the circuit's (`fits`), so its leaves are checked against it.
        let leaves_ok = |(b, _): (&PolynomialBatch<F, Config, D>, usize)| {
            let t = &b.merkle_tree;
            t.leaves.is_empty() || host_leaves(t, shape(b)).is_ok()
        };
        if !(self.fits() && self.trees().into_iter().all(leaves_ok)) {
            return Err(BackendError::Shape("quotient inputs do not match the circuit".into()));
        }
        Ok(())
    }

    /// Everything [`QuotientInputs::check`] checks but the leaves: the challenges, the
    /// coset, and each commitment's shape (the whole LDE, the circuit's width).
    fn fits(&self) -> bool {
        let c = self.common;
        let rounds = c.config.num_challenges;
        let lde = self.lde_rows();
        self.betas.len() == rounds
            && self.gammas.len() == rounds
            && self.alphas.len() == rounds
            && quotient_bits(c) <= c.config.fri_config.rate_bits
            && c.quotient_degree_factor > 0
            // One partial product per chunk of routed wires but the last (plonky2's layout),
            // so the terms are `num_terms` long.
            && c.config.num_routed_wires.div_ceil(c.quotient_degree_factor) == c.num_partial_products + 1
            && self.trees().iter().all(|&(b, w)| shape(b) == Shape { rows: lde, width: w })
    }

    /// Points of the commitments' LDE.
    fn lde_rows(&self) -> usize {
        self.common.degree() << self.common.config.fri_config.rate_bits
    }

    /// The three commitments' leaves on the host, as [`QuotientInputs::trees`] orders them
    /// (checked where they are read: leaves kept elsewhere are an empty view, of no LDE's shape).
    fn host_views(&self) -> [LdeView<'_>; 3] {
        self.trees().map(|(b, _)| LdeView::Leaves(&b.merkle_tree.leaves))
    }

    /// The widths of the three commitments the quotient reads: constants and sigmas, wires, Z
    /// and partial products.
    fn widths(&self) -> [usize; 3] {
        let c = self.common;
        [c.sigmas_range().end, c.config.num_wires, c.config.num_challenges * (1 + c.num_partial_products)]
    }

    /// The commitments whose leaves the quotient reads, in the kernel's order (constants and
    /// sigmas, wires, Z and partial products), each with its width. Their leaves are on the host
    /// or kept by the backend that made them ([`crate::backend::Leaves`]). (Their shapes are
    /// checked by [`QuotientInputs::kernel_args`].)
    pub fn trees(&self) -> [(&PolynomialBatch<F, Config, D>, usize); 3] {
        let [cs, wires, zs] = self.widths();
        [(&self.prover.constants_sigmas_commitment, cs), (self.wires, wires), (self.zs, zs)]
    }

    /// [`QuotientInputs::values_on_cpu`] for commitments whose leaves `backend` may have kept:
    /// those are read from it whole first (the fallback of a device backend whose kernel does not
    /// take the circuit).
    pub fn values_on_cpu_from(&self, backend: &dyn Backend) -> Result<Vec<F>> {
        let on_host =
            |b: &PolynomialBatch<F, Config, D>, width: usize| -> Result<Option<PolynomialBatch<F, Config, D>>> {
                let t = &b.merkle_tree;
                if !t.leaves.is_empty() {
                    return Ok(None);
                }
                let rows: Vec<usize> = (0..shape(b).rows).collect();
                let leaves = backend.leaf_rows(t, Shape { rows: rows.len(), width }, &rows)?;
                tracing::debug!("read {} kept leaf rows of {width} back for the quotient on the CPU", rows.len());
                Ok(Some(PolynomialBatch {
                    polynomials: b.polynomials.clone(),
                    merkle_tree: MerkleTree { leaves, digests: t.digests.clone(), cap: t.cap.clone() },
                    degree_log: b.degree_log,
                    rate_bits: b.rate_bits,
                    blinding: b.blinding,
                }))
            };
        let [_, (wires, w), (zs, z)] = self.trees();
        let (wires_copy, zs_copy) = (on_host(wires, w)?, on_host(zs, z)?);
        let inputs = QuotientInputs {
            wires: wires_copy.as_ref().unwrap_or(self.wires),
            zs: zs_copy.as_ref().unwrap_or(self.zs),
            ..*self
        };
        inputs.values_on_cpu()
    }

    /// Every `step`-th point of the commitments' LDE is a point of the quotient coset.
    fn step(&self) -> usize {
        1 << (self.common.config.fri_config.rate_bits - quotient_bits(self.common))
    }

    /// The number of terms combined by α: L₀ terms, partial-product checks, gate constraints.
    pub fn num_terms(&self) -> usize {
        let c = &self.common;
        c.config.num_challenges * (c.num_partial_products + 2) + c.num_gate_constraints
    }

    /// The quotient coset's points and `L₀` at each (computed once per shape, see
    /// [`CosetPoints`]).
    fn coset_points(&self) -> Arc<CosetPoints> {
        CosetPoints::of(self.common.degree_bits(), quotient_bits(self.common))
    }

    /// The vanishing terms with rayon: `num_challenges × size` values, challenge by challenge,
    /// point `i` being `shift·ω^i`. Everything runs on vector lanes ([`crate::quotient_x8`]) where
    /// the CPU has AVX-512 or AVX2 and the lanes take the circuit (they know every gate, the
    /// permutation argument fits); otherwise the gates are plonky2's own
    /// `eval_filtered_base_batch` and the rest scalar code. The values are the same.
    pub fn values_on_cpu(&self) -> Result<Vec<F>> {
        self.values_on_cpu_over(self.host_views())
    }

    /// [`QuotientInputs::values_on_cpu`], the three commitments' LDEs read from `views` (in
    /// [`QuotientInputs::trees`]' order) rather than from their leaves on the host.
    pub fn values_on_cpu_over(&self, views: [LdeView<'_>; 3]) -> Result<Vec<F>> {
        match self.values_on_cpu_with_over(CpuGates::Lanes(isa()), views) {
            Err(BackendError::Unsupported(why) | BackendError::Shape(why)) => {
                tracing::debug!("quotient on plonky2's gates, not on lanes: {why}");
                self.values_on_cpu_with_over(CpuGates::Plonky2, views)
            }
            values => values,
        }
    }

    /// [`QuotientInputs::values_on_cpu`] with the gates evaluated as `gates` says: on lanes,
    /// the rest of the terms and their combination are on lanes too. Lanes the CPU lacks, a gate
    /// the lanes do not know, or a shape they do not take (more than [`MAX_CHALLENGES`]
    /// challenges or [`MAX_STEPS`] partial-product steps) is [`BackendError::Unsupported`].
    pub fn values_on_cpu_with(&self, gates: CpuGates) -> Result<Vec<F>> {
        self.values_on_cpu_with_over(gates, self.host_views())
    }

    /// [`QuotientInputs::values_on_cpu_with`] over `views` (see
    /// [`QuotientInputs::values_on_cpu_over`]), each checked to be its commitment's whole LDE.
    pub fn values_on_cpu_with_over(&self, gates: CpuGates, views: [LdeView<'_>; 3]) -> Result<Vec<F>> {
        let lde = self.lde_rows();
        if !(self.fits() && views.iter().zip(self.widths()).all(|(v, w)| v.has_shape(lde, w))) {
            return Err(BackendError::Shape(
                "quotient inputs do not match the circuit (or their leaves are not where the views read them)".into(),
            ));
        }
        let [cs_lde, wires_lde, zs_lde] = views;
        let lanes = match gates {
            CpuGates::Plonky2 => None,
            CpuGates::Lanes(isa) => {
                let width = width(isa)
                    .filter(|_| isa.supported())
                    .ok_or_else(|| BackendError::Unsupported(format!("gates on {} lanes on this CPU", isa.name())))?;
                let c = self.common;
                if c.config.num_challenges > MAX_CHALLENGES
                    || c.config.num_routed_wires.div_ceil(c.quotient_degree_factor) > MAX_STEPS
                {
                    return Err(BackendError::Unsupported("a permutation argument this large on lanes".into()));
                }
                Some((isa, width, GateProgram::of(self.common, self.selectors)?))
            }
        };
        let common = self.common;
        let step = self.step();
        let next_step = 1 << quotient_bits(common);
        let size = self.size();
        let z_h = ZeroPolyOnCoset::<F>::new(common.degree_bits(), quotient_bits(common));
        let num_challenges = common.config.num_challenges;
        let routed = common.config.num_routed_wires;
        let num_prods = common.num_partial_products;
        let chunk = common.quotient_degree_factor;
        let num_constraints = common.num_gate_constraints;
        let num_selectors = self.selectors.groups.len();
        let points = self.coset_points();
        let (xs, l0s) = (&points.xs, &points.l0s);
        // β·k_j for each challenge and routed wire: the identity permutation's part of a numerator.
        let beta_k: Vec<F> =
            self.betas.iter().flat_map(|&beta| common.k_is[..routed].iter().map(move |&k| beta * k)).collect();
        // α^t for every term: plonky2's Horner evaluation of the terms by α is Σ_t α^t·term_t,
        // which `dot` computes without Horner's chain of dependent products.
        let alpha_powers: Vec<Vec<F>> =
            self.alphas.iter().map(|&alpha| alpha.powers().take(self.num_terms()).collect()).collect();
        // The permutation argument's steps: products over chunks of the routed wires.
        let steps = routed.div_ceil(chunk);

        // Per batch of points: each challenge's values at its points, challenge after challenge.
        let per_batch: Vec<Vec<F>> = xs
            .par_chunks(CPU_BATCH)
            .enumerate()
            .map(|(b, batch_xs)| {
                let len = batch_xs.len();
                let first = b * CPU_BATCH;
                // Constants and wires of the batch, column-major as `EvaluationVarsBaseBatch` wants.
                let mut constants = vec![F::ZERO; len * common.num_constants];
                let mut wire_vals = vec![F::ZERO; len * common.config.num_wires];
                cs_lde.gather(common.constants_range(), first, step, len, &mut constants);
                wires_lde.gather(0..common.config.num_wires, first, step, len, &mut wire_vals);
                let mut gate_terms = vec![F::ZERO; num_constraints * len];
                match &lanes {
                    Some((isa, width, program)) if len.is_multiple_of(*width) => {
                        let batch = PointBatch {
                            len,
                            constants: &constants,
                            wires: &wire_vals,
                            num_selectors,
                            public_inputs_hash: self.public_inputs_hash.elements,
                        };
                        add_gate_terms(*isa, program, &batch, num_constraints, &mut gate_terms);
                        // The rest of the terms' inputs as columns too, for the lanes.
                        let zs_width = num_challenges * (1 + num_prods);
                        let mut sigmas = vec![F::ZERO; routed * len];
                        let mut zs = vec![F::ZERO; zs_width * len];
                        let mut zs_next = vec![F::ZERO; num_challenges * len];
                        let sigmas_start = common.sigmas_range().start;
                        cs_lde.gather(sigmas_start..sigmas_start + routed, first, step, len, &mut sigmas);
                        zs_lde.gather(0..zs_width, first, step, len, &mut zs);
                        let mut zh_inv = Vec::with_capacity(len);
                        for k in 0..len {
                            let i = first + k;
                            let next = ((i + next_step) % size) * step;
                            for j in 0..num_challenges {
                                zs_next[j * len + k] = zs_lde.value(j, next);
                            }
                            zh_inv.push(z_h.eval_inverse(i));
                        }
                        let batch = TermBatch {
                            len,
                            xs: batch_xs,
                            l0s: &l0s[first..first + len],
                            zh_inv: &zh_inv,
                            wires: &wire_vals,
                            sigmas: &sigmas,
                            zs: &zs,
                            zs_next: &zs_next,
                            gate_terms: &gate_terms,
                            beta_k: &beta_k,
                            betas: self.betas,
                            gammas: self.gammas,
                            alpha_powers: &alpha_powers,
                            routed,
                            chunk,
                            num_prods,
                        };
                        let mut out = vec![F::ZERO; num_challenges * len];
                        combine_terms(*isa, &batch, &mut out);
                        out
                    }
                    _ => {
                        let vars = EvaluationVarsBaseBatch::new(len, &constants, &wire_vals, &self.public_inputs_hash);
                        for (g, gate) in common.gates.iter().enumerate() {
                            let sel = self.selectors.selector_indices[g];
                            let terms = gate.0.eval_filtered_base_batch(
                                vars,
                                g,
                                sel,
                                self.selectors.groups[sel].clone(),
                                num_selectors,
                                common.num_lookup_selectors,
                            );
                            gate_terms.iter_mut().zip(&terms).for_each(|(a, t)| *a += *t);
                        }

                        let mut out = vec![F::ZERO; num_challenges * len];
                        let mut terms = Vec::with_capacity(self.num_terms());
                        let (mut num, mut den) = (vec![F::ONE; steps], vec![F::ONE; steps]);
                        let (mut local, mut next, mut sigmas) = (Vec::new(), Vec::new(), Vec::new());
                        let zs_width = num_challenges * (1 + num_prods);
                        for (k, &x) in batch_xs.iter().enumerate() {
                            let i = first + k;
                            zs_lde.row_into(0..zs_width, i * step, &mut local);
                            zs_lde.row_into(0..zs_width, ((i + next_step) % size) * step, &mut next);
                            cs_lde.row_into(common.sigmas_range(), i * step, &mut sigmas);
                            let l_0 = l0s[i];
                            terms.clear();
                            // L_0(x)·(Z(x) − 1), for each challenge.
                            terms.extend(local[..num_challenges].iter().map(|&z| l_0 * (z - F::ONE)));
                            // Each partial product step: prev·Π numerators − next·Π denominators, the
                            // accumulators running Z(x), the partial products, Z(gx).
                            for c in 0..num_challenges {
                                let (beta, gamma) = (self.betas[c], self.gammas[c]);
                                let partials =
                                    &local[num_challenges + c * num_prods..num_challenges + (c + 1) * num_prods];
                                // Every step's product of numerators and of denominators, wire `r` of
                                // every chunk in turn, so that the steps' chains of products overlap.
                                num.fill(F::ONE);
                                den.fill(F::ONE);
                                for r in 0..chunk {
                                    for step in 0..steps {
                                        let j = step * chunk + r;
                                        if j < routed {
                                            let w = wire_vals[j * len + k];
                                            num[step] *= w + beta_k[c * routed + j] * x + gamma;
                                            den[step] *= w + beta * sigmas[j] + gamma;
                                        }
                                    }
                                }
                                let mut prev = local[c];
                                for step in 0..steps {
                                    let acc = if step < num_prods { partials[step] } else { next[c] };
                                    terms.push(prev * num[step] - acc * den[step]);
                                    prev = acc;
                                }
                            }
                            terms.extend((0..num_constraints).map(|m| gate_terms[m * len + k]));
                            let inv = z_h.eval_inverse(i);
                            for (c, powers) in alpha_powers.iter().enumerate() {
                                out[c * len + k] = dot(&terms, powers) * inv;
                            }
                        }
                        out
                    }
                }
            })
            .collect();

        let mut flat = vec![F::ZERO; num_challenges * size];
        flat.par_chunks_mut(size).enumerate().for_each(|(c, poly)| {
            for (points, batch) in poly.chunks_mut(CPU_BATCH).zip(&per_batch) {
                points.copy_from_slice(&batch[c * points.len()..(c + 1) * points.len()]);
            }
        });
        Ok(flat)
    }

    /// The flat arrays the C quotient code reads (`cuda/quotient.cuh`), or why it cannot run
    /// this circuit.
    pub fn kernel_args(&self) -> Result<QuotientKernelArgs> {
        self.check()?;
        let common = self.common;
        let program = GateProgram::of(common, self.selectors)?;
        let num_challenges = common.config.num_challenges;
        if num_challenges > MAX_CHALLENGES {
            return Err(BackendError::Unsupported(format!(
                "{num_challenges} challenges (the C takes {MAX_CHALLENGES})"
            )));
        }
        let routed = common.config.num_routed_wires;
        let size = self.size();
        let lde_bits = common.degree_bits() + common.config.fri_config.rate_bits;
        let step_bits = common.config.fri_config.rate_bits - quotient_bits(common);
        let terms = self.num_terms();
        let small = |v: usize| {
            u32::try_from(v).map_err(|_| BackendError::Shape(format!("{v} does not fit the quotient kernel")))
        };
        let shape = vec![
            small(common.config.num_wires)?,
            small(common.num_constants)?,
            small(self.selectors.groups.len())?,
            small(routed)?,
            small(num_challenges)?,
            small(common.num_partial_products)?,
            small(common.quotient_degree_factor)?,
            small(program.gates.len())?,
            small(terms)?,
            small(common.sigmas_range().end)?,
            small(num_challenges * (1 + common.num_partial_products))?,
            small(lde_bits)?,
            small(step_bits)?,
            small(quotient_bits(common))?,
        ];
        debug_assert_eq!(shape.len(), SHAPE_LEN);

        // β·k_j, β, γ, the public inputs' hash, then α^t for every term t, challenge by challenge.
        let mut params: Vec<F> =
            self.betas.iter().flat_map(|&beta| common.k_is[..routed].iter().map(move |&k| beta * k)).collect();
        params.extend_from_slice(self.betas);
        params.extend_from_slice(self.gammas);
        params.extend_from_slice(&self.public_inputs_hash.elements);
        for &alpha in self.alphas {
            params.extend(alpha.powers().take(terms));
        }
        let gate_data = program.data.len();
        params.extend_from_slice(&program.data);

        let points = self.coset_points();
        let z_h = ZeroPolyOnCoset::<F>::new(common.degree_bits(), quotient_bits(common));
        let zh_inv = (0..1usize << quotient_bits(common)).map(|i| z_h.eval_inverse(i)).collect();
        let args = QuotientKernelArgs { shape, gates: program.encode(), gate_data, params, points, zh_inv, size };
        args.check()?;
        Ok(args)
    }
}

/// [`Backend::quotient_coeffs`] on the host: `backend`'s [`Backend::quotient_values`], its
/// [`Backend::intt_batch`] on the coset's size, then each coefficient `cᵢ` times `shift⁻ⁱ`.
pub fn coeffs_from_values<B: Backend + ?Sized>(backend: &B, q: &QuotientInputs<'_>) -> Result<Vec<F>> {
    let size = q.size();
    let mut flat = backend.quotient_values(q)?;
    if flat.len() != q.common.config.num_challenges * size {
        return Err(BackendError::Shape(format!("{} quotient values for {size} points", flat.len())));
    }
    backend.intt_batch(&mut flat, size)?;
    let unshift = crate::ntt_x8::shift_powers(F::coset_shift().inverse(), size);
    flat.par_chunks_mut(size).for_each(|poly| poly.iter_mut().zip(unshift.iter()).for_each(|(c, s)| *c *= *s));
    Ok(flat)
}

/// The quotient coset's points `shift·ω^i` and `L₀` at each, `Z_H(x) / (n·(x − 1))`, for a
/// trace of `2^degree_bits` rows on a coset `2^quotient_bits` times larger. They are the same in
/// every proof of a circuit, so they are computed once per shape and shared: 2.8 ms on dev-2c
/// for the batch circuit, on the host's part of every proof, which bounds a device's.
#[derive(Debug, PartialEq, Eq)]
pub struct CosetPoints {
    /// The points `shift·ω^i`, `ω` of order `2^(degree_bits + quotient_bits)`.
    pub xs: Vec<F>,
    /// `L₀` at each point.
    pub l0s: Vec<F>,
}

/// Shapes whose [`CosetPoints`] are kept (a process proves a handful of circuits).
const MAX_COSET_SHAPES: usize = 8;

impl CosetPoints {
    /// The points and `L₀` of this shape: computed on first use, then shared.
    pub fn of(degree_bits: usize, quotient_bits: usize) -> Arc<Self> {
        type Shapes = Vec<((usize, usize), Arc<CosetPoints>)>;
        static SHAPES: Mutex<Shapes> = Mutex::new(Vec::new());
        let key = (degree_bits, quotient_bits);
        if let Some((_, p)) = SHAPES.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|(k, _)| *k == key) {
            return p.clone();
        }
        // Computed outside the lock: two threads may both compute a new shape, the same values.
        let points = Arc::new(Self::compute(degree_bits, quotient_bits));
        let mut shapes = SHAPES.lock().unwrap_or_else(|p| p.into_inner());
        if !shapes.iter().any(|(k, _)| *k == key) {
            if shapes.len() >= MAX_COSET_SHAPES {
                shapes.remove(0);
            }
            shapes.push((key, points.clone()));
        }
        points
    }

    fn compute(degree_bits: usize, quotient_bits: usize) -> Self {
        let z_h = ZeroPolyOnCoset::<F>::new(degree_bits, quotient_bits);
        let n = F::from_canonical_usize(1 << degree_bits);
        let xs: Vec<F> =
            F::two_adic_subgroup(degree_bits + quotient_bits).into_par_iter().map(|p| F::coset_shift() * p).collect();
        let den: Vec<F> = xs.par_iter().map(|&x| n * (x - F::ONE)).collect();
        let inv: Vec<F> = den.par_chunks(1 << 12).flat_map_iter(F::batch_multiplicative_inverse).collect();
        let l0s = inv.par_iter().enumerate().map(|(i, &v)| z_h.eval(i) * v).collect();
        Self { xs, l0s }
    }
}

/// The most challenge rounds the C accumulates (plonky2's configs use 2).
pub const MAX_CHALLENGES: usize = 4;

/// Words of [`QuotientKernelArgs::shape`], in the order `quotient.cuh` reads them.
pub const SHAPE_LEN: usize = 14;

/// Words per gate in [`GateProgram::encode`].
pub const GATE_WORDS: usize = 10;

/// The quotient's inputs as flat arrays, in the layout of `cuda/quotient.cuh`.
#[derive(Clone, Debug)]
pub struct QuotientKernelArgs {
    /// Wires, constants (selectors included), selectors, routed wires, challenges, partial
    /// products per challenge, the quotient degree factor, gates, α-terms, width of the
    /// constants-and-sigmas rows, width of the Z rows, log2 of the LDE, log2 of the step from the
    /// LDE to the quotient coset, quotient bits.
    pub shape: Vec<u32>,
    /// [`GateProgram::encode`].
    pub gates: Vec<u32>,
    /// β·k_j (challenge-major), β, γ, the public inputs' hash, α^t (challenge-major), then
    /// the gates' data ([`GateProgram::data`]).
    pub params: Vec<F>,
    /// Length of the gates' data at the end of `params`.
    pub gate_data: usize,
    /// The coset points and L₀ at each.
    pub points: Arc<CosetPoints>,
    /// `1 / Z_H` at the first `2^quotient_bits` points (it repeats).
    pub zh_inv: Vec<F>,
    /// Points.
    pub size: usize,
}

impl QuotientKernelArgs {
    /// Every array holds what the shape says, so the C reads nothing out of bounds.
    fn check(&self) -> Result<()> {
        let s = |k: usize| self.shape[k] as usize;
        let (wires, constants, selectors, routed, challenges, prods) = (s(0), s(1), s(2), s(3), s(4), s(5));
        let (gates, terms, cs_width, zs_width, lde_bits, step_bits, qbits) =
            (s(7), s(8), s(9), s(10), s(11), s(12), s(13));
        let ok = self.size == 1 << (lde_bits - step_bits)
            && cs_width == constants + routed
            && selectors <= constants
            && routed <= wires
            && zs_width == challenges * (1 + prods)
            && s(6) > 0
            && routed.div_ceil(s(6)) == prods + 1
            && self.gates.len() == gates * GATE_WORDS
            && self.params.len() == challenges * routed + 2 * challenges + 4 + challenges * terms + self.gate_data
            && self.gates.chunks(GATE_WORDS).all(|g| g[0] != 12 || g[9] as usize + (2usize << g[1]) <= self.gate_data)
            && self.points.xs.len() == self.size
            && self.points.l0s.len() == self.size
            && self.zh_inv.len() == 1 << qbits
            && terms >= challenges * (prods + 2) + GateProgram::max_constraints(&self.gates);
        if !ok {
            return Err(BackendError::Shape("quotient kernel arguments do not match their shape".into()));
        }
        Ok(())
    }

    /// Field elements in the leaves the kernel reads (constants and sigmas, wires, Z), each
    /// `2^lde_bits` rows, row after row in the commitment's bit-reversed order: the length of
    /// each leaf buffer passed with these arguments.
    pub fn leaf_elements(&self) -> [usize; 3] {
        let lde = 1usize << self.shape[11];
        [lde * self.shape[9] as usize, lde * self.shape[0] as usize, lde * self.shape[10] as usize]
    }

    /// `u64` words of a field array, as the C reads them.
    pub fn words(v: &[F]) -> Vec<u64> {
        use plonky2::field::types::PrimeField64;
        v.iter().map(|x| x.to_canonical_u64()).collect()
    }
}

/// A gate the C quotient code evaluates, with its selector filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateOp {
    /// Which gate, with its parameters.
    pub kind: GateKind,
    /// Its index among the circuit's gates (the selector value of its rows).
    pub row: usize,
    /// Its selector polynomial.
    pub selector: usize,
    /// The gate indices that share that selector.
    pub group: Range<usize>,
    /// How many constraints it has.
    pub num_constraints: usize,
    /// Where its data starts in [`GateProgram::data`].
    pub data_offset: usize,
}

/// The gates `quotient.cuh` implements: the batch circuit's and the recursion circuits'.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateKind {
    /// plonky2's `NoopGate`.
    Noop,
    /// `ConstantGate` with this many constants.
    Constant(usize),
    /// `PublicInputGate`.
    PublicInput,
    /// `ArithmeticGate` with this many operations.
    Arithmetic(usize),
    /// `BaseSumGate<2>` with this many limbs.
    BaseSum2(usize),
    /// `PoseidonGate` (width 12).
    Poseidon,
    /// `ArithmeticExtensionGate` with this many operations.
    ArithmeticExtension(usize),
    /// `MulExtensionGate` with this many operations.
    MulExtension(usize),
    /// `ReducingGate` (base coefficients) with this many coefficients.
    Reducing(usize),
    /// `ReducingExtensionGate` with this many coefficients.
    ReducingExtension(usize),
    /// `PoseidonMdsGate`.
    PoseidonMds,
    /// `RandomAccessGate`: index bits, copies, extra constants.
    RandomAccess(usize, usize, usize),
    /// `CosetInterpolationGate`: subgroup bits, degree; its domain and barycentric weights are
    /// the gate's data.
    CosetInterpolation(usize, usize),
    /// [`RangeCheckGate`]: bits, values per row.
    RangeCheck(usize, usize),
    /// `ExponentiationGate` with this many exponent bits: plonky2's recursive verifier takes it
    /// for proofs of 2^18 rows or more, so the circuits of that shape carry it.
    Exponentiation(usize),
}

impl GateKind {
    fn code(self) -> [u32; 4] {
        let p = |v: usize| v as u32;
        match self {
            GateKind::Noop => [0, 0, 0, 0],
            GateKind::Constant(n) => [1, p(n), 0, 0],
            GateKind::PublicInput => [2, 0, 0, 0],
            GateKind::Arithmetic(n) => [3, p(n), 0, 0],
            GateKind::BaseSum2(n) => [4, p(n), 0, 0],
            GateKind::Poseidon => [5, 0, 0, 0],
            GateKind::ArithmeticExtension(n) => [6, p(n), 0, 0],
            GateKind::MulExtension(n) => [7, p(n), 0, 0],
            GateKind::Reducing(n) => [8, p(n), 0, 0],
            GateKind::ReducingExtension(n) => [9, p(n), 0, 0],
            GateKind::PoseidonMds => [10, 0, 0, 0],
            GateKind::RandomAccess(bits, copies, extra) => [11, p(bits), p(copies), p(extra)],
            GateKind::CosetInterpolation(bits, degree) => [12, p(bits), p(degree), 0],
            GateKind::RangeCheck(bits, ops) => [13, p(bits), p(ops), 0],
            GateKind::Exponentiation(bits) => [14, p(bits), 0, 0],
        }
    }
}

/// The largest `RandomAccessGate` the C folds (its list lives in a local array).
pub const MAX_RANDOM_ACCESS_BITS: usize = 6;

/// The circuit's gates, in order, as the C evaluates them.
#[derive(Clone, Debug)]
pub struct GateProgram {
    /// One per gate of the circuit.
    pub gates: Vec<GateOp>,
    /// Field constants some gates read (a coset interpolation's domain and weights).
    pub data: Vec<F>,
}

impl GateProgram {
    /// The program of `common`'s gates, or [`BackendError::Unsupported`] naming the first gate
    /// the C does not implement.
    pub fn of(common: &CommonCircuitData<F, D>, selectors: &Selectors) -> Result<Self> {
        if common.num_lookup_selectors != 0 {
            return Err(BackendError::Unsupported("lookup selectors".into()));
        }
        let mut gates = Vec::with_capacity(common.gates.len());
        let mut data = Vec::new();
        for (row, gate) in common.gates.iter().enumerate() {
            let any = gate.0.as_any();
            let data_offset = data.len();
            let kind = if any.is::<NoopGate>() {
                GateKind::Noop
            } else if any.is::<ConstantGate>() {
                // Its count is crate-private; it has one constraint per constant.
                GateKind::Constant(gate.0.num_constraints())
            } else if any.is::<PublicInputGate>() {
                GateKind::PublicInput
            } else if let Some(g) = any.downcast_ref::<ArithmeticGate>() {
                GateKind::Arithmetic(g.num_ops)
            } else if let Some(g) = any.downcast_ref::<BaseSumGate<2>>() {
                GateKind::BaseSum2(g.num_limbs)
            } else if any.is::<PoseidonGate<F, D>>() {
                GateKind::Poseidon
            } else if let Some(g) = any.downcast_ref::<ArithmeticExtensionGate<D>>() {
                GateKind::ArithmeticExtension(g.num_ops)
            } else if let Some(g) = any.downcast_ref::<MulExtensionGate<D>>() {
                GateKind::MulExtension(g.num_ops)
            } else if let Some(g) = any.downcast_ref::<ReducingGate<D>>() {
                GateKind::Reducing(g.num_coeffs)
            } else if let Some(g) = any.downcast_ref::<ReducingExtensionGate<D>>() {
                GateKind::ReducingExtension(g.num_coeffs)
            } else if any.is::<PoseidonMdsGate<F, D>>() {
                GateKind::PoseidonMds
            } else if let Some(g) = any.downcast_ref::<RandomAccessGate<F, D>>() {
                if g.bits > MAX_RANDOM_ACCESS_BITS || g.bits == 0 {
                    return Err(BackendError::Unsupported(format!("a random access of {} bits", g.bits)));
                }
                GateKind::RandomAccess(g.bits, g.num_copies, g.num_extra_constants)
            } else if let Some(g) = any.downcast_ref::<CosetInterpolationGate<F, D>>() {
                let points = 1usize << g.subgroup_bits;
                if g.degree < 2 || g.barycentric_weights.len() != points {
                    return Err(BackendError::Unsupported(format!("the quotient kernel has no {}", gate.0.id())));
                }
                data.extend(F::two_adic_subgroup(g.subgroup_bits));
                data.extend_from_slice(&g.barycentric_weights);
                GateKind::CosetInterpolation(g.subgroup_bits, g.degree)
            } else if let Some(g) = any.downcast_ref::<RangeCheckGate>() {
                GateKind::RangeCheck(g.bits, g.num_ops)
            } else if let Some(g) = any.downcast_ref::<ExponentiationGate<F, D>>() {
                if g.num_power_bits == 0 {
                    return Err(BackendError::Unsupported("an exponentiation of no bits".into()));
                }
                GateKind::Exponentiation(g.num_power_bits)
            } else {
                return Err(BackendError::Unsupported(format!("the quotient kernel has no {}", gate.0.id())));
            };
            let selector = selectors.selector_indices[row];
            let op = GateOp {
                kind,
                row,
                selector,
                group: selectors.groups[selector].clone(),
                num_constraints: gate.0.num_constraints(),
                data_offset,
            };
            // The C indexes wires, constants and terms by these counts.
            let fits = op.num_constraints <= common.num_gate_constraints
                && gate.0.num_wires() <= common.config.num_wires
                && gate.0.num_constants() + selectors.groups.len() <= common.num_constants;
            if !fits {
                return Err(BackendError::Shape(format!("{} does not fit the circuit's shape", gate.0.id())));
            }
            gates.push(op);
        }
        Ok(Self { gates, data })
    }

    /// [`GATE_WORDS`] words per gate: kind, three parameters, row, selector, group start and
    /// end, constraints, data offset.
    pub fn encode(&self) -> Vec<u32> {
        self.gates
            .iter()
            .flat_map(|g| {
                let [kind, p0, p1, p2] = g.kind.code();
                let w = |v: usize| v as u32;
                [
                    kind,
                    p0,
                    p1,
                    p2,
                    w(g.row),
                    w(g.selector),
                    w(g.group.start),
                    w(g.group.end),
                    w(g.num_constraints),
                    w(g.data_offset),
                ]
            })
            .collect()
    }

    /// The largest constraint count in an encoded program.
    fn max_constraints(encoded: &[u32]) -> usize {
        encoded.chunks(GATE_WORDS).map(|g| g[8] as usize).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use plonky2::field::types::Field64;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// The shared points are `shift·ω^i` with `L₀(x)·n·(x − 1) = x^n − 1`, computed once per shape.
    #[test]
    fn coset_points_are_the_coset_and_l0_and_shared_per_shape() {
        for (degree_bits, quotient_bits) in [(0, 1), (3, 2), (5, 3)] {
            let p = CosetPoints::of(degree_bits, quotient_bits);
            assert!(Arc::ptr_eq(&p, &CosetPoints::of(degree_bits, quotient_bits)));
            let n = 1usize << degree_bits;
            let w = F::primitive_root_of_unity(degree_bits + quotient_bits);
            assert_eq!(p.xs.len(), n << quotient_bits);
            for (i, (&x, &l0)) in p.xs.iter().zip(&p.l0s).enumerate() {
                assert_eq!(x, F::coset_shift() * w.exp_u64(i as u64));
                assert_eq!(l0 * F::from_canonical_usize(n) * (x - F::ONE), x.exp_u64(n as u64) - F::ONE);
            }
        }
        assert_ne!(CosetPoints::of(3, 2), CosetPoints::of(2, 3), "two shapes of one size");
    }

    /// An LDE read as columns gives what plonky2's bit-reversed leaves give, batch by batch and
    /// point by point, for every step between the quotient's coset and the LDE, for a range of
    /// polynomials inside the row.
    #[test]
    fn columns_and_leaves_read_the_same_lde() {
        let mut rng = StdRng::seed_from_u64(6);
        let (rows, width) = (64usize, 7);
        let columns: Vec<Vec<F>> = (0..width)
            .map(|_| (0..rows).map(|_| F::from_canonical_u64(rng.gen_range(0..F::ORDER))).collect())
            .collect();
        let bits = rows.trailing_zeros() as usize;
        let leaves: Vec<Vec<F>> =
            (0..rows).map(|r| columns.iter().map(|c| c[reverse_bits(r, bits)]).collect()).collect();
        let (by_columns, by_leaves) = (LdeView::Columns(&columns), LdeView::Leaves(&leaves));
        assert!(by_columns.has_shape(rows, width) && by_leaves.has_shape(rows, width));
        assert!(!by_columns.has_shape(rows, width + 1) && !by_leaves.has_shape(rows / 2, width));
        for step in [1, 2, 8] {
            for (first, len) in [(0, 8), (3, 5), (rows / step - 4, 4)] {
                for polys in [0..width, 2..5] {
                    let mut a = vec![F::ZERO; polys.len() * len];
                    let mut b = vec![F::ONE; polys.len() * len];
                    by_columns.gather(polys.clone(), first, step, len, &mut a);
                    by_leaves.gather(polys.clone(), first, step, len, &mut b);
                    assert_eq!(a, b, "step {step}, points from {first}, polynomials {polys:?}");
                    // Polynomial after polynomial, each its points in order.
                    assert_eq!(a[len + 1], columns[polys.start + 1][(first + 1) * step]);
                }
            }
        }
        let (mut a, mut b) = (Vec::new(), vec![F::ONE]);
        for i in [0, 1, 37, rows - 1] {
            by_columns.row_into(1..6, i, &mut a);
            by_leaves.row_into(1..6, i, &mut b);
            assert_eq!(a, b, "point {i}");
            assert_eq!(a[2], columns[3][i]);
            assert_eq!(by_columns.value(4, i), by_leaves.value(4, i));
        }
    }

    /// `dot` against Horner's rule by plonky2's field, with raw values up to 2^64 − 1 (not
    /// canonical, as the terms may be) and enough terms that the 128-bit sum wraps many times.
    #[test]
    fn dot_equals_horners_rule_past_every_wrap() {
        let mut rng = StdRng::seed_from_u64(5);
        let edges = [0, 1, F::ORDER - 1, F::ORDER, F::ORDER + 1, u64::MAX - 1, u64::MAX];
        for len in [0, 1, 2, 150, 1000] {
            for pick in 0..4 {
                let raw = |rng: &mut StdRng| match pick {
                    0 => u64::MAX,
                    1 => edges[rng.gen_range(0..edges.len())],
                    _ => rng.gen(),
                };
                let terms: Vec<F> = (0..len).map(|_| F::from_noncanonical_u64(raw(&mut rng))).collect();
                let alpha = F::from_noncanonical_u64(raw(&mut rng));
                let powers: Vec<F> = alpha.powers().take(len).collect();
                let horner = terms.iter().rev().fold(F::ZERO, |acc, &t| acc * alpha + t);
                assert_eq!(dot(&terms, &powers), horner, "{len} terms, pick {pick}");
            }
        }
        // All-maximal products wrap the sum once every two terms.
        let max = vec![F::from_noncanonical_u64(u64::MAX); 1000];
        let naive = max.iter().zip(&max).fold(F::ZERO, |acc, (a, b)| acc + *a * *b);
        assert_eq!(dot(&max, &max), naive);
    }
}
