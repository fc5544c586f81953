//! The quotient's terms on vector lanes, `W` points at a time: the rayon backend's evaluation of
//! the gates our circuits use ([`GateProgram`], the same descriptors the CUDA C reads), in place
//! of plonky2's `eval_filtered_base_batch` ([`add_gate_terms`]), then the permutation argument's
//! terms and every term's combination by α and division by `Z_H` ([`combine_terms`]).
//!
//! plonky2 1.1 evaluates each gate at one point at a time in scalar arithmetic (unless the
//! whole build targets AVX2 or AVX-512), allocating each gate's constraint vector per batch of
//! points; that was two thirds of the CPU quotient step. Here each gate's constraints are the
//! ones `cuda/quotient.cuh` evaluates (itself tested equal to plonky2's gates), written over
//! [`crate::lanes`], each value a vector of `W` points, and each multiplied by the gate's
//! selector filter and added into the batch's constraint sums, plonky2's `gate_terms`.
//!
//! The values are plonky2's exactly: every constraint is the same polynomial in the wires and
//! constants, evaluated in exact arithmetic modulo p. One change of form, exact as a polynomial
//! identity: the Poseidon gate's partial rounds run in their textbook form (round constants on
//! every element, the S-box on element 0, the MDS layer; [`crate::poseidon_x8`] says why that is
//! cheaper on lanes) rather than plonky2's sparse form. The sparse form is a rewriting of the
//! linear layers that holds whatever the S-box is, so each S-box input, and with it each
//! constraint `state[0] − sbox_in`, is the same linear function of the gate's wires in both.
//! The tests hold every quotient value at every point equal to plonky2's gates and scalar terms,
//! in whole proofs of circuits with every gate kind, on each instruction set the CPU has.
//!
//! Values are kept canonical: inputs are reduced as they are loaded, every product is reduced
//! below p, so a sum needs one carry and a difference one borrow.

use crate::lanes::{width, words, words_of, Isa};
use crate::quotient::{GateProgram, MAX_CHALLENGES};
use crate::F;

/// Most partial-product steps per challenge the lanes take (`⌈routed wires / quotient degree
/// factor⌉`: 10 in plonky2's standard configurations).
pub const MAX_STEPS: usize = 32;

/// plonky2's `UNUSED_SELECTOR` (`u32::MAX`), the selector value of rows no gate of a group uses.
const UNUSED_SELECTOR: u64 = u32::MAX as u64;

/// One batch of points, as plonky2's `EvaluationVarsBaseBatch` holds it: each constant (the
/// selectors first) and each wire a column of `len` values.
pub struct PointBatch<'a> {
    /// Points in the batch.
    pub len: usize,
    /// `num_constants` columns, selectors first.
    pub constants: &'a [F],
    /// `num_wires` columns.
    pub wires: &'a [F],
    /// Selector columns before the gates' own constants.
    pub num_selectors: usize,
    /// The public inputs' hash (the public-input gate's constraint).
    pub public_inputs_hash: [F; 4],
}

/// Adds each gate's filtered constraints at the batch's points into `terms` (constraint `m` of
/// point `k` at `m·len + k`, plonky2's `gate_terms`), on `isa`. `terms` must hold canonical
/// values (zeros to start); it is left canonical.
///
/// # Panics
/// If the CPU lacks `isa`, `isa` is the scalar fallback, the batch is not a whole number of
/// vectors, or the columns do not hold what the program reads.
pub fn add_gate_terms(
    isa: Isa,
    program: &GateProgram,
    batch: &PointBatch<'_>,
    num_constraints: usize,
    terms: &mut [F],
) {
    let w = width(isa).expect("a vector instruction set");
    assert!(isa.supported(), "this CPU has no {}", isa.name());
    assert!(batch.len.is_multiple_of(w), "{} points in vectors of {w}", batch.len);
    assert_eq!(terms.len(), num_constraints * batch.len, "one sum per constraint and point");
    assert!(
        program.gates.iter().all(|g| g.num_constraints <= num_constraints),
        "a gate with more constraints than the circuit"
    );
    assert!(
        batch.constants.len().is_multiple_of(batch.len) && batch.wires.len().is_multiple_of(batch.len),
        "whole columns"
    );
    match isa {
        // SAFETY: the CPU has the instruction set (asserted above).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::add_gate_terms(program, batch, words(terms)) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::add_gate_terms(program, batch, words(terms)) },
        _ => unreachable!("checked above: a vector instruction set"),
    }
}

/// The rest of a batch's vanishing terms, as columns of `len` values like [`PointBatch`]'s, and
/// what combines them: plonky2's `eval_vanishing_poly_base_batch` after the gates.
pub struct TermBatch<'a> {
    /// Points in the batch.
    pub len: usize,
    /// The coset points, `L₀` at each, and `1/Z_H` at each: one column each.
    pub xs: &'a [F],
    /// See `xs`.
    pub l0s: &'a [F],
    /// See `xs`.
    pub zh_inv: &'a [F],
    /// The wires, `num_wires` columns (the routed ones first).
    pub wires: &'a [F],
    /// The routed wires' sigmas, one column each.
    pub sigmas: &'a [F],
    /// The Z and partial-products commitment at the points: each challenge's Z, then each
    /// challenge's partial products, one column each.
    pub zs: &'a [F],
    /// Each challenge's Z at the next point (`g·x`), one column each.
    pub zs_next: &'a [F],
    /// The gates' filtered constraint sums ([`add_gate_terms`]), one column per constraint.
    pub gate_terms: &'a [F],
    /// β·k_j for each challenge, then each routed wire.
    pub beta_k: &'a [F],
    /// β and γ of each challenge.
    pub betas: &'a [F],
    /// See `betas`.
    pub gammas: &'a [F],
    /// α^t for each challenge and term, in term order: L₀ terms, partial-product checks, gates.
    pub alpha_powers: &'a [Vec<F>],
    /// Routed wires.
    pub routed: usize,
    /// Routed wires per partial product (the quotient degree factor).
    pub chunk: usize,
    /// Partial products per challenge.
    pub num_prods: usize,
}

/// Each challenge's `Σ_t α^t·term_t / Z_H` at the batch's points into `out` (challenge `c`'s
/// value at point `k` at `c·len + k`), on `isa`: the `L₀·(Z − 1)` terms, each partial-product
/// step's `prev·Π numerators − next·Π denominators`, then the gates' sums; the same terms and
/// order as the scalar code in `quotient.rs`.
///
/// # Panics
/// If the CPU lacks `isa`, `isa` is the scalar fallback, the batch is not a whole number of
/// vectors, there are more than [`MAX_CHALLENGES`] challenges, or a column is missing.
pub fn combine_terms(isa: Isa, batch: &TermBatch<'_>, out: &mut [F]) {
    let w = width(isa).expect("a vector instruction set");
    assert!(isa.supported(), "this CPU has no {}", isa.name());
    assert!(batch.len.is_multiple_of(w), "{} points in vectors of {w}", batch.len);
    let challenges = batch.betas.len();
    assert!(challenges <= MAX_CHALLENGES, "{challenges} challenges");
    assert!(batch.gammas.len() == challenges && batch.alpha_powers.len() == challenges, "one γ and α per β");
    assert_eq!(out.len(), challenges * batch.len, "one value per challenge and point");
    let steps = batch.routed.div_ceil(batch.chunk);
    assert_eq!(steps, batch.num_prods + 1, "one partial product per chunk of routed wires but the last");
    assert!(steps <= MAX_STEPS, "{steps} partial-product steps");
    let terms = batch.gate_terms.len() / batch.len + challenges * (steps + 1);
    assert!(batch.alpha_powers.iter().all(|p| p.len() >= terms), "an α power per term");
    assert!(
        batch.wires.len() >= batch.routed * batch.len
            && batch.sigmas.len() >= batch.routed * batch.len
            && batch.zs.len() >= challenges * (1 + batch.num_prods) * batch.len
            && batch.zs_next.len() >= challenges * batch.len
            && [batch.xs, batch.l0s, batch.zh_inv].iter().all(|c| c.len() >= batch.len)
            && batch.beta_k.len() >= challenges * batch.routed,
        "columns of the batch's shape"
    );
    match isa {
        // SAFETY: the CPU has the instruction set (asserted above).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::combine_terms(batch, words(out)) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::combine_terms(batch, words(out)) },
        _ => unreachable!("checked above: a vector instruction set"),
    }
}

/// Rows of the permutation argument on the subgroup (the prover's partial products and Z):
/// `len` rows from `first`, every challenge, read from whole columns of `n`.
pub struct RowBatch<'a> {
    /// Rows in a column.
    pub n: usize,
    /// The batch's first row.
    pub first: usize,
    /// Rows in the batch.
    pub len: usize,
    /// The wire columns, one after another (`wires[j·n + i]`), the routed ones first.
    pub wires: &'a [F],
    /// The routed wires' sigmas, row by row (plonky2's `ProverOnlyCircuitData::sigmas`).
    pub sigmas: &'a [Vec<F>],
    /// The subgroup's points, `n` of them.
    pub xs: &'a [F],
    /// β·k_j for each challenge, then each routed wire.
    pub beta_k: &'a [F],
    /// β and γ of each challenge.
    pub betas: &'a [F],
    /// See `betas`.
    pub gammas: &'a [F],
    /// Routed wires.
    pub routed: usize,
    /// Routed wires per product (the quotient degree factor).
    pub chunk: usize,
}

/// Each row's products of the permutation argument's numerators and denominators over each chunk
/// of routed wires, for each challenge: `Π (w_j + β·k_j·x + γ)` into `nums` and
/// `Π (w_j + β·σ_j + γ)` into `dens`, challenge `c`, row `r` of the batch and chunk `s` at
/// `(c·len + r)·steps + s`; the products the scalar code in `prove.rs` forms, on `isa`, `W` rows
/// at a time.
///
/// # Panics
/// If the CPU lacks `isa`, `isa` is the scalar fallback, the batch is not a whole number of
/// vectors, there are more than [`MAX_CHALLENGES`] challenges or [`MAX_STEPS`] chunks, or the
/// columns or outputs are not of the batch's shape.
pub fn row_products(isa: Isa, batch: &RowBatch<'_>, nums: &mut [F], dens: &mut [F]) {
    let w = width(isa).expect("a vector instruction set");
    assert!(isa.supported(), "this CPU has no {}", isa.name());
    assert!(batch.len.is_multiple_of(w), "{} rows in vectors of {w}", batch.len);
    let challenges = batch.betas.len();
    assert!(challenges <= MAX_CHALLENGES && batch.gammas.len() == challenges, "{challenges} challenges");
    let steps = batch.routed.div_ceil(batch.chunk);
    assert!(steps <= MAX_STEPS, "{steps} chunks");
    let end = batch.first + batch.len;
    assert!(
        end <= batch.n
            && batch.wires.len() >= batch.routed * batch.n
            && batch.xs.len() >= end
            && batch.sigmas.len() >= end
            && batch.sigmas[batch.first..end].iter().all(|s| s.len() >= batch.routed)
            && batch.beta_k.len() >= challenges * batch.routed,
        "columns of the batch's shape"
    );
    assert!(nums.len() == challenges * batch.len * steps && dens.len() == nums.len(), "one product per chunk");
    match isa {
        // SAFETY: the CPU has the instruction set (asserted above).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::row_products(batch, words(nums), words(dens)) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::row_products(batch, words(nums), words(dens)) },
        _ => unreachable!("checked above: a vector instruction set"),
    }
}

/// The gates on vectors of `W` lanes, over the lane arithmetic in scope and the Poseidon MDS
/// layer of [`crate::poseidon_x8`].
macro_rules! lane_gates {
    ($feature:literal) => {
        use plonky2::hash::poseidon::{HALF_N_FULL_ROUNDS, N_PARTIAL_ROUNDS, SPONGE_WIDTH};

        use super::{words_of, PointBatch, RowBatch, TermBatch, MAX_STEPS, UNUSED_SELECTOR};
        use crate::poseidon_x8::ROUND_CONSTANTS;
        use crate::quotient::{GateKind, GateOp, GateProgram, MAX_CHALLENGES, MAX_RANDOM_ACCESS_BITS};
        use crate::F;

        /// An element of the quadratic extension F[u]/(u² − 7), plonky2's: `a + b·u`.
        type Ext = (V, V);

        /// `a·b`, canonical.
        #[target_feature(enable = $feature)]
        #[inline]
        fn m(a: V, b: V) -> V {
            canonical(mul(a, b))
        }

        #[target_feature(enable = $feature)]
        #[inline]
        fn ext_add(x: Ext, y: Ext) -> Ext {
            (add_mod(x.0, y.0), add_mod(x.1, y.1))
        }

        #[target_feature(enable = $feature)]
        #[inline]
        fn ext_sub(x: Ext, y: Ext) -> Ext {
            (sub_mod(x.0, y.0), sub_mod(x.1, y.1))
        }

        #[target_feature(enable = $feature)]
        #[inline]
        fn ext_scale(x: Ext, c: V) -> Ext {
            (m(x.0, c), m(x.1, c))
        }

        /// `(a + b·u)(c + d·u) = (ac + 7bd) + (ad + bc)·u`.
        #[target_feature(enable = $feature)]
        #[inline]
        fn ext_mul(x: Ext, y: Ext) -> Ext {
            let bd = m(x.1, y.1);
            (add_mod(m(x.0, y.0), m(splat(7), bd)), add_mod(m(x.0, y.1), m(x.1, y.0)))
        }

        /// The `W` points from `k` of a batch's columns, and where their constraint sums go.
        struct Points<'a> {
            len: usize,
            k: usize,
            constants: &'a [u64],
            wires: &'a [u64],
            num_selectors: usize,
            terms: &'a mut [u64],
            /// The current gate's filter.
            filter: V,
        }

        impl Points<'_> {
            /// Wire `j`, canonical.
            #[target_feature(enable = $feature)]
            #[inline]
            fn w(&self, j: usize) -> V {
                canonical(load(&self.wires[j * self.len + self.k..]))
            }

            /// Wires `j` and `j + 1` as an extension element.
            #[target_feature(enable = $feature)]
            #[inline]
            fn ext(&self, j: usize) -> Ext {
                (self.w(j), self.w(j + 1))
            }

            /// Constant column `j` (selectors first), canonical.
            #[target_feature(enable = $feature)]
            #[inline]
            fn column(&self, j: usize) -> V {
                canonical(load(&self.constants[j * self.len + self.k..]))
            }

            /// The current gate's constant `i`.
            #[target_feature(enable = $feature)]
            #[inline]
            fn c(&self, i: usize) -> V {
                self.column(self.num_selectors + i)
            }

            /// Constraint `i` of the current gate: its filter times `v`, added to the sums.
            #[target_feature(enable = $feature)]
            #[inline]
            fn constraint(&mut self, i: usize, v: V) {
                let at = &mut self.terms[i * self.len + self.k..];
                let sum = add_mod(load(at), m(self.filter, v));
                store(at, sum);
            }

            /// An extension constraint: its two components, constraints `i` and `i + 1`, as
            /// plonky2's `to_basefield_array`.
            #[target_feature(enable = $feature)]
            #[inline]
            fn constraint_ext(&mut self, i: usize, v: Ext) {
                self.constraint(i, v.0);
                self.constraint(i + 1, v.1);
            }
        }

        /// plonky2's `compute_filter`: Π over the group's other gates of `(index − s)`, and
        /// `(UNUSED_SELECTOR − s)` when there is more than one selector.
        #[target_feature(enable = $feature)]
        #[inline]
        fn filter(p: &Points<'_>, op: &GateOp) -> V {
            let s = p.column(op.selector);
            let mut f = splat(1);
            for j in op.group.clone().filter(|&j| j != op.row) {
                f = m(f, sub_mod(splat(j as u64), s));
            }
            if p.num_selectors > 1 {
                f = m(f, sub_mod(splat(UNUSED_SELECTOR), s));
            }
            f
        }

        /// Every gate's filtered constraints at every point of the batch, added into `terms`.
        ///
        /// # Safety
        /// The CPU must have the module's instruction set.
        #[target_feature(enable = $feature)]
        pub unsafe fn add_gate_terms(program: &GateProgram, batch: &PointBatch<'_>, terms: &mut [u64]) {
            let pi_hash = batch.public_inputs_hash.map(|h| splat(h.to_canonical_u64()));
            let data: Vec<V> = program.data.iter().map(|d| splat(d.to_canonical_u64())).collect();
            for k in (0..batch.len).step_by(W) {
                let mut p = Points {
                    len: batch.len,
                    k,
                    constants: words_of(batch.constants),
                    wires: words_of(batch.wires),
                    num_selectors: batch.num_selectors,
                    terms: &mut *terms,
                    filter: zero(),
                };
                for op in &program.gates {
                    p.filter = filter(&p, op);
                    gate(&mut p, op, &pi_hash, &data[op.data_offset..]);
                }
            }
        }

        /// The combination of every term at every point of the batch, into `out`.
        ///
        /// # Safety
        /// The CPU must have the module's instruction set.
        #[target_feature(enable = $feature)]
        pub unsafe fn combine_terms(b: &TermBatch<'_>, out: &mut [u64]) {
            let challenges = b.betas.len();
            let steps = b.routed.div_ceil(b.chunk);
            let splat_f = |f: F| splat(f.to_canonical_u64());
            let (wires, sigmas, zs, zs_next) =
                (words_of(b.wires), words_of(b.sigmas), words_of(b.zs), words_of(b.zs_next));
            let gate_terms = words_of(b.gate_terms);
            let num_constraints = b.gate_terms.len() / b.len;
            for k in (0..b.len).step_by(W) {
                let col = |data: &[u64], j: usize| canonical(load(&data[j * b.len + k..]));
                let mut acc = [zero(); MAX_CHALLENGES];
                let mut t = 0;
                // Term t into every challenge's sum, by that challenge's α^t.
                let mut emit = |v: V| {
                    for (c, a) in acc.iter_mut().enumerate().take(challenges) {
                        *a = add_mod(*a, m(splat_f(b.alpha_powers[c][t]), v));
                    }
                    t += 1;
                };
                let x = col(words_of(b.xs), 0);
                let l0 = col(words_of(b.l0s), 0);
                for c in 0..challenges {
                    emit(m(l0, sub_mod(col(zs, c), splat(1))));
                }
                let mut num = [zero(); MAX_STEPS];
                let mut den = [zero(); MAX_STEPS];
                for c in 0..challenges {
                    let (beta, gamma) = (splat_f(b.betas[c]), splat_f(b.gammas[c]));
                    num[..steps].fill(splat(1));
                    den[..steps].fill(splat(1));
                    // Wire r of every chunk in turn, so that the steps' chains of products
                    // overlap.
                    for r in 0..b.chunk {
                        for s in 0..steps {
                            let j = s * b.chunk + r;
                            if j < b.routed {
                                let wg = add_mod(col(wires, j), gamma);
                                num[s] = m(num[s], add_mod(wg, m(splat_f(b.beta_k[c * b.routed + j]), x)));
                                den[s] = m(den[s], add_mod(wg, m(beta, col(sigmas, j))));
                            }
                        }
                    }
                    let mut prev = col(zs, c);
                    for s in 0..steps {
                        let next =
                            if s < b.num_prods { col(zs, challenges + c * b.num_prods + s) } else { col(zs_next, c) };
                        emit(sub_mod(m(prev, num[s]), m(next, den[s])));
                        prev = next;
                    }
                }
                for i in 0..num_constraints {
                    emit(col(gate_terms, i));
                }
                let inv = col(words_of(b.zh_inv), 0);
                for (c, a) in acc.iter().enumerate().take(challenges) {
                    store(&mut out[c * b.len + k..], m(*a, inv));
                }
            }
        }

        /// See [`super::row_products`]. Wire by wire over the whole batch: each wire's run of
        /// `len` rows is contiguous (a column), where a row at a time would read one element
        /// from each of the routed columns, `n` apart, and miss the cache on nearly every one
        /// (41 % of this function's time in a first version that did).
        ///
        /// # Safety
        /// The CPU must have the module's instruction set.
        #[target_feature(enable = $feature)]
        pub unsafe fn row_products(b: &RowBatch<'_>, nums: &mut [u64], dens: &mut [u64]) {
            let challenges = b.betas.len();
            let steps = b.routed.div_ceil(b.chunk);
            let groups = b.len / W;
            let splat_f = |f: F| splat(f.to_canonical_u64());
            let wires = words_of(b.wires);
            // The batch's sigmas as columns (`sigmas[j·len + r]`), from plonky2's rows.
            let mut sigmas = vec![0u64; b.routed * b.len];
            for (r, row) in b.sigmas[b.first..b.first + b.len].iter().enumerate() {
                for (j, s) in row[..b.routed].iter().enumerate() {
                    sigmas[j * b.len + r] = s.0;
                }
            }
            let xs: Vec<V> = (0..groups).map(|g| canonical(load(&words_of(b.xs)[b.first + g * W..]))).collect();
            let betas: Vec<V> = b.betas.iter().map(|&f| splat_f(f)).collect();
            let gammas: Vec<V> = b.gammas.iter().map(|&f| splat_f(f)).collect();
            let beta_k: Vec<V> = b.beta_k[..challenges * b.routed].iter().map(|&f| splat_f(f)).collect();
            // Products of group g, challenge c, chunk s at (g·challenges + c)·steps + s.
            let mut num = vec![splat(1); groups * challenges * steps];
            let mut den = num.clone();
            for j in 0..b.routed {
                let s = j / b.chunk;
                for g in 0..groups {
                    let w = canonical(load(&wires[j * b.n + b.first + g * W..]));
                    let sigma = canonical(load(&sigmas[j * b.len + g * W..]));
                    for c in 0..challenges {
                        let at = (g * challenges + c) * steps + s;
                        let wg = add_mod(w, gammas[c]);
                        num[at] = m(num[at], add_mod(wg, m(beta_k[c * b.routed + j], xs[g])));
                        den[at] = m(den[at], add_mod(wg, m(betas[c], sigma)));
                    }
                }
            }
            let mut lane = [0u64; W];
            for (out, products) in [(&mut *nums, &num), (&mut *dens, &den)] {
                for g in 0..groups {
                    for c in 0..challenges {
                        for s in 0..steps {
                            store(&mut lane, products[(g * challenges + c) * steps + s]);
                            for (l, x) in lane.iter().enumerate() {
                                out[(c * b.len + g * W + l) * steps + s] = *x;
                            }
                        }
                    }
                }
            }
        }

        /// One gate's constraints, as `qt_gate` in `cuda/quotient.cuh`.
        #[target_feature(enable = $feature)]
        fn gate(p: &mut Points<'_>, op: &GateOp, pi_hash: &[V; 4], data: &[V]) {
            match op.kind {
                GateKind::Noop => {}
                GateKind::Constant(n) => {
                    for i in 0..n {
                        p.constraint(i, sub_mod(p.c(i), p.w(i)));
                    }
                }
                GateKind::PublicInput => {
                    for (i, h) in pi_hash.iter().enumerate() {
                        p.constraint(i, sub_mod(p.w(i), *h));
                    }
                }
                GateKind::Arithmetic(n) => {
                    let (c0, c1) = (p.c(0), p.c(1));
                    for i in 0..n {
                        let computed = add_mod(m(m(p.w(4 * i), p.w(4 * i + 1)), c0), m(p.w(4 * i + 2), c1));
                        p.constraint(i, sub_mod(p.w(4 * i + 3), computed));
                    }
                }
                GateKind::BaseSum2(limbs) => {
                    // Σ limb_i·2^i − sum, then limb·(limb − 1) for each limb.
                    let mut sum = zero();
                    for i in (1..=limbs).rev() {
                        sum = add_mod(add_mod(sum, sum), p.w(i));
                    }
                    p.constraint(0, sub_mod(sum, p.w(0)));
                    for i in 0..limbs {
                        let limb = p.w(1 + i);
                        p.constraint(1 + i, m(limb, sub_mod(limb, splat(1))));
                    }
                }
                GateKind::RangeCheck(bits, ops) => {
                    // Per value: Σ limb_j·4^j − value, then x(x − 1)(x − 2)(x − 3) = y(y + 2)
                    // with y = x(x − 3) for each limb, x(x − 1) for a last limb that is a bit.
                    let limbs = bits.div_ceil(2);
                    for op in 0..ops {
                        let first = ops + op * limbs;
                        let mut sum = zero();
                        for j in (0..limbs).rev() {
                            let twice = add_mod(sum, sum);
                            sum = add_mod(add_mod(twice, twice), p.w(first + j));
                        }
                        let at = op * (1 + limbs);
                        p.constraint(at, sub_mod(sum, p.w(op)));
                        for j in 0..limbs {
                            let x = p.w(first + j);
                            let c = if bits % 2 == 1 && j + 1 == limbs {
                                m(x, sub_mod(x, splat(1)))
                            } else {
                                let y = m(x, sub_mod(x, splat(3)));
                                m(y, add_mod(y, splat(2)))
                            };
                            p.constraint(at + 1 + j, c);
                        }
                    }
                }
                GateKind::Poseidon => poseidon(p),
                GateKind::ArithmeticExtension(n) => {
                    let (c0, c1) = (p.c(0), p.c(1));
                    for i in 0..n {
                        let product = ext_mul(p.ext(8 * i), p.ext(8 * i + 2));
                        let computed = ext_add(ext_scale(product, c0), ext_scale(p.ext(8 * i + 4), c1));
                        p.constraint_ext(2 * i, ext_sub(p.ext(8 * i + 6), computed));
                    }
                }
                GateKind::MulExtension(n) => {
                    let c0 = p.c(0);
                    for i in 0..n {
                        let computed = ext_scale(ext_mul(p.ext(6 * i), p.ext(6 * i + 2)), c0);
                        p.constraint_ext(2 * i, ext_sub(p.ext(6 * i + 4), computed));
                    }
                }
                GateKind::Reducing(n) => reducing(p, n, false),
                GateKind::ReducingExtension(n) => reducing(p, n, true),
                GateKind::PoseidonMds => {
                    let a: [V; SPONGE_WIDTH] = std::array::from_fn(|i| p.w(2 * i));
                    let b: [V; SPONGE_WIDTH] = std::array::from_fn(|i| p.w(2 * i + 1));
                    let (a, b) = (mds(&a), mds(&b));
                    for i in 0..SPONGE_WIDTH {
                        let computed = (canonical(a[i]), canonical(b[i]));
                        p.constraint_ext(2 * i, ext_sub(p.ext(2 * (SPONGE_WIDTH + i)), computed));
                    }
                }
                GateKind::RandomAccess(bits, copies, extra) => random_access(p, bits, copies, extra),
                GateKind::CosetInterpolation(bits, degree) => coset_interpolation(p, bits, degree, data),
                GateKind::Exponentiation(n) => {
                    // Wires: the base, the exponent's n bits (least significant first), the
                    // output, the n running powers. prev·(bit·base + 1 − bit) − power_i over the
                    // bits from the most significant, prev being 1 and then power_{i−1}²; then
                    // output − power_{n−1}.
                    let (base, one) = (p.w(0), splat(1));
                    let mut prev = one;
                    for i in 0..n {
                        let bit = p.w(n - i);
                        let power = p.w(n + 2 + i);
                        let by = add_mod(m(bit, base), sub_mod(one, bit));
                        p.constraint(i, sub_mod(m(prev, by), power));
                        prev = m(power, power);
                    }
                    p.constraint(n, sub_mod(p.w(n + 1), p.w(2 * n + 1)));
                }
            }
        }

        /// `acc·α + coeff − next` over the coefficients (base or extension); the last
        /// accumulator is the output, wires 0 and 1.
        #[target_feature(enable = $feature)]
        fn reducing(p: &mut Points<'_>, n: usize, ext: bool) {
            let (alpha, mut acc) = (p.ext(2), p.ext(4));
            let accs = 6 + if ext { 2 * n } else { n };
            for i in 0..n {
                let coeff = if ext { p.ext(6 + 2 * i) } else { (p.w(6 + i), zero()) };
                let next = if i + 1 == n { p.ext(0) } else { p.ext(accs + 2 * i) };
                p.constraint_ext(2 * i, ext_sub(ext_add(ext_mul(acc, alpha), coeff), next));
                acc = next;
            }
        }

        /// plonky2's `PoseidonGate` (width 12): the swap, then every S-box input a wire, the
        /// partial rounds in their textbook form (see the module's documentation).
        #[target_feature(enable = $feature)]
        fn poseidon(p: &mut Points<'_>) {
            const SWAP: usize = 2 * SPONGE_WIDTH;
            const DELTA: usize = SWAP + 1;
            const FULL_0: usize = DELTA + 4;
            const PARTIAL: usize = FULL_0 + SPONGE_WIDTH * (HALF_N_FULL_ROUNDS - 1);
            const FULL_1: usize = PARTIAL + N_PARTIAL_ROUNDS;
            // The round constants with the partial rounds' carried forward: a partial round adds
            // element 0's alone ([`crate::poseidon_x8::ROUND_CONSTANTS`]).
            let rc = |round: usize, i: usize| splat(ROUND_CONSTANTS[round * SPONGE_WIDTH + i]);
            let mut c = 0;
            let swap = p.w(SWAP);
            p.constraint(c, m(swap, sub_mod(swap, splat(1))));
            c += 1;
            let mut st = [zero(); SPONGE_WIDTH];
            for i in 0..4 {
                let (a, b, delta) = (p.w(i), p.w(i + 4), p.w(DELTA + i));
                p.constraint(c, sub_mod(m(swap, sub_mod(b, a)), delta));
                c += 1;
                st[i] = add_mod(a, delta);
                st[i + 4] = sub_mod(b, delta);
            }
            for (i, x) in st.iter_mut().enumerate().skip(8) {
                *x = p.w(i);
            }
            let mut round = 0;
            for r in 0..HALF_N_FULL_ROUNDS {
                for (i, x) in st.iter_mut().enumerate() {
                    *x = add_canonical(*x, rc(round, i));
                }
                if r != 0 {
                    for (i, x) in st.iter_mut().enumerate() {
                        let sbox_in = p.w(FULL_0 + SPONGE_WIDTH * (r - 1) + i);
                        p.constraint(c, sub_mod(canonical(*x), sbox_in));
                        c += 1;
                        *x = sbox_in;
                    }
                }
                st.iter_mut().for_each(|x| *x = sbox(*x));
                st = mds(&st);
                round += 1;
            }
            for r in 0..N_PARTIAL_ROUNDS {
                st[0] = add_canonical(st[0], rc(round, 0));
                let sbox_in = p.w(PARTIAL + r);
                p.constraint(c, sub_mod(canonical(st[0]), sbox_in));
                c += 1;
                st[0] = sbox(sbox_in);
                st = mds(&st);
                round += 1;
            }
            for r in 0..HALF_N_FULL_ROUNDS {
                for (i, x) in st.iter_mut().enumerate() {
                    let sbox_in = p.w(FULL_1 + SPONGE_WIDTH * r + i);
                    p.constraint(c, sub_mod(canonical(add_canonical(*x, rc(round, i))), sbox_in));
                    c += 1;
                    *x = sbox(sbox_in);
                }
                st = mds(&st);
                round += 1;
            }
            for (i, x) in st.iter().enumerate() {
                p.constraint(c, sub_mod(canonical(*x), p.w(SPONGE_WIDTH + i)));
                c += 1;
            }
        }

        /// plonky2's `RandomAccessGate`: per copy, the index bits boolean, the index their sum,
        /// the claimed element the list folded by the bits; then the extra constants.
        #[target_feature(enable = $feature)]
        fn random_access(p: &mut Points<'_>, bits: usize, copies: usize, extra: usize) {
            let items = 1 << bits;
            let routed = (2 + items) * copies + extra;
            let mut c = 0;
            let mut list = [zero(); 1 << MAX_RANDOM_ACCESS_BITS];
            for copy in 0..copies {
                let base = (2 + items) * copy;
                let bit = |p: &Points<'_>, i: usize| p.w(routed + copy * bits + i);
                for i in 0..bits {
                    let b = bit(p, i);
                    p.constraint(c, m(b, sub_mod(b, splat(1))));
                    c += 1;
                }
                let mut index = zero();
                for i in (0..bits).rev() {
                    index = add_mod(add_mod(index, index), bit(p, i));
                }
                p.constraint(c, sub_mod(index, p.w(base)));
                c += 1;
                // Fold the list in halves, each pair (x, y) to x + b·(y − x).
                for (i, item) in list[..items].iter_mut().enumerate() {
                    *item = p.w(base + 2 + i);
                }
                let mut len = items;
                for i in 0..bits {
                    let b = bit(p, i);
                    for k in 0..len / 2 {
                        list[k] = add_mod(list[2 * k], m(b, sub_mod(list[2 * k + 1], list[2 * k])));
                    }
                    len /= 2;
                }
                p.constraint(c, sub_mod(list[0], p.w(base + 1)));
                c += 1;
            }
            for i in 0..extra {
                p.constraint(c, sub_mod(p.c(i), p.w((2 + items) * copies + i)));
                c += 1;
            }
        }

        /// plonky2's `CosetInterpolationGate`: the shifted evaluation point, then the
        /// barycentric interpolation in chunks of `degree − 1` points, each chunk's running
        /// evaluation and product checked against its intermediate wires. `data` holds the
        /// subgroup, then the barycentric weights.
        #[target_feature(enable = $feature)]
        fn coset_interpolation(p: &mut Points<'_>, bits: usize, degree: usize, data: &[V]) {
            let points = 1 << bits;
            let (domain, weights) = (&data[..points], &data[points..2 * points]);
            let start = 5 + 2 * points;
            let intermediates = (points - 2) / (degree - 1);
            let (point, value) = (p.ext(1 + 2 * points), p.ext(3 + 2 * points));
            let shifted = p.ext(start + 4 * intermediates);
            let mut c = 0;
            p.constraint_ext(c, ext_sub(point, ext_scale(shifted, p.w(0))));
            c += 2;
            // plonky2's `partial_interpolate` over points [from, to).
            let partial = |p: &Points<'_>, from: usize, to: usize, eval: Ext, prod: Ext| {
                let (mut eval, mut prod) = (eval, prod);
                for k in from..to {
                    let val = ext_scale(p.ext(1 + 2 * k), weights[k]);
                    let term = (sub_mod(shifted.0, domain[k]), shifted.1);
                    eval = ext_add(ext_mul(eval, term), ext_mul(val, prod));
                    prod = ext_mul(prod, term);
                }
                (eval, prod)
            };
            let (mut eval, mut prod) = partial(p, 0, degree, (zero(), zero()), (splat(1), zero()));
            for i in 0..intermediates {
                let (e, q) = (p.ext(start + 2 * i), p.ext(start + 2 * (intermediates + i)));
                p.constraint_ext(c, ext_sub(e, eval));
                p.constraint_ext(c + 2, ext_sub(q, prod));
                c += 4;
                let from = 1 + (degree - 1) * (i + 1);
                (eval, prod) = partial(p, from, (from + degree - 1).min(points), e, q);
            }
            p.constraint_ext(c, ext_sub(value, eval));
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! The gates on eight lanes of `__m512i`.

    use plonky2::field::types::PrimeField64;

    use crate::lanes::avx512::*;
    use crate::poseidon_x8::avx512::mds_for_gate as mds;

    lane_gates!("avx512f");
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The gates on four lanes of `__m256i`.

    use plonky2::field::types::PrimeField64;

    use crate::lanes::avx2::*;
    use crate::poseidon_x8::avx2::mds_for_gate as mds;

    lane_gates!("avx2");
}
