//! plonky2's Poseidon permutation on eight states at once, one per 64-bit lane of vector
//! registers (AVX-512, or AVX2 in two passes of four), for the rayon backend's Merkle trees and
//! proof-of-work search, and for witness generation's Poseidon gates ([`permute_for_gate`]).
//!
//! Hashing is three quarters of a CPU proof (the leaves of every commitment), and plonky2 1.1
//! permutes one state at a time with scalar arithmetic (its AVX2 permutation is commented out).
//! Here each Goldilocks product is four 32×32-bit lane multiplications (`vpmuludq`) and
//! plonky2's own reduction of the 128-bit result. The permutation is plonky2's: the same
//! constants and MDS matrix, the same output. Four things make the vector version cheaper than
//! a transcription of plonky2's `poseidon`, each exact:
//! - the MDS layer is plonky2's frequency-domain product (`mds_multiply_freq`), whose constants
//!   are shifts;
//! - with that MDS layer, the partial rounds are cheaper in their textbook form (plonky2's
//!   `partial_rounds_naive`: round constants, one S-box, the MDS layer) than in the sparse
//!   "fast" form plonky2's `poseidon` runs, whose dot products multiply by full 64-bit
//!   constants; plonky2's tests hold the two forms equal;
//! - the S-box's two squarings take three 32-bit products, not four, as plonky2's own AVX-512
//!   field squares, and each product's high halves come from a shuffle, off the shift unit;
//! - a partial round adds one round constant, element 0's: the others are carried through the
//!   MDS layer into the next round's (`ROUND_CONSTANTS`).
//!
//! The rounds are written once (`lane_rounds!`) over the lane arithmetic of [`crate::lanes`],
//! which each instruction set defines: on AVX-512 a carry is a compare into a mask register and
//! a masked add; AVX2 has neither, so its carries are emulated and its products avoid them.
//!
//! Values stay in `[0, 2^64)` like plonky2's (not necessarily canonical); digests are written
//! canonical.
//!
//! [`isa`] is this CPU's best instruction set (detected once, at run time); on a CPU with
//! neither, and on other architectures, every function here falls back to plonky2's scalar
//! Poseidon. Whichever runs, the digests are plonky2's: the tests compare each instruction set
//! the CPU has with plonky2 on random and edge values.

use plonky2::field::types::{Field, PrimeField64};
use plonky2::hash::hash_types::NUM_HASH_OUT_ELTS;
use plonky2::hash::poseidon::{
    Poseidon, PoseidonHash, ALL_ROUND_CONSTANTS, HALF_N_FULL_ROUNDS, N_PARTIAL_ROUNDS, N_ROUNDS, SPONGE_RATE,
    SPONGE_WIDTH,
};
use plonky2::plonk::config::Hasher;
use rayon::prelude::*;

use crate::backend::Digest;
use crate::lanes::{isa, Isa};
use crate::transcript::pow_response;
use crate::F;

/// States per call of the vector permutation.
pub const LANES: usize = 8;

/// Whether a vector permutation runs on this CPU (AVX-512F or AVX2).
pub fn available() -> bool {
    isa() != Isa::Scalar
}

/// Eight states, lane by lane: `states[i][l]` is element `i` of state `l`.
pub type Lanes = [[u64; LANES]; SPONGE_WIDTH];

/// Permutes eight states in place, on this CPU's best instruction set ([`isa`]).
pub fn permute(states: &mut Lanes) {
    // SAFETY: `isa()` is an instruction set this CPU supports.
    unsafe { permute_on(isa(), states) }
}

/// Permutes eight states in place with `isa`; `false`, and `states` untouched, where this CPU
/// lacks it. For tests and benchmarks; [`permute`] takes the best.
pub fn permute_with(isa: Isa, states: &mut Lanes) -> bool {
    if !isa.supported() {
        return false;
    }
    // SAFETY: checked just above.
    unsafe { permute_on(isa, states) };
    true
}

/// # Safety
/// The CPU must support `isa`.
unsafe fn permute_on(isa: Isa, states: &mut Lanes) {
    match isa {
        // SAFETY: the caller's guarantee.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::permute(states) },
        // SAFETY: the caller's guarantee.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::permute(states) },
        _ => permute_scalar(states),
    }
}

/// The fallback: plonky2's permutation, one state at a time.
#[allow(clippy::needless_range_loop)] // `l` indexes the inner, lane, dimension
fn permute_scalar(states: &mut Lanes) {
    use plonky2::hash::poseidon::Poseidon;
    for l in 0..LANES {
        let state: [F; SPONGE_WIDTH] = std::array::from_fn(|i| F::from_noncanonical_u64(states[i][l]));
        let out = F::poseidon(state);
        for (i, x) in out.iter().enumerate() {
            states[i][l] = x.to_noncanonical_u64();
        }
    }
}

/// How many S-box inputs plonky2's `PoseidonGate` keeps as wires: every element's in full rounds
/// 1 to 3, element 0's in the 22 partial rounds, every element's in the last four full rounds.
pub const GATE_SBOX_INPUTS: usize =
    SPONGE_WIDTH * (HALF_N_FULL_ROUNDS - 1) + N_PARTIAL_ROUNDS + SPONGE_WIDTH * HALF_N_FULL_ROUNDS;

/// The S-box inputs of eight permutations, lane by lane, in the gate's wire order (see
/// [`GATE_SBOX_INPUTS`]): `inputs[k][l]` is the `k`-th of state `l`.
pub type SboxInputs = [[u64; LANES]; GATE_SBOX_INPUTS];

/// Permutes eight states in place as [`permute`] does, and writes the S-box inputs the Poseidon
/// gate's wires hold into `sbox`: the witness of eight gates at once. Everything written is
/// canonical, states included.
pub fn permute_for_gate(states: &mut Lanes, sbox: &mut SboxInputs) {
    // SAFETY: `isa()` is an instruction set this CPU supports.
    unsafe { permute_for_gate_on(isa(), states, sbox) }
}

/// [`permute_for_gate`] with `isa`; `false`, and nothing written, where this CPU lacks it.
pub fn permute_for_gate_with(isa: Isa, states: &mut Lanes, sbox: &mut SboxInputs) -> bool {
    if !isa.supported() {
        return false;
    }
    // SAFETY: checked just above.
    unsafe { permute_for_gate_on(isa, states, sbox) };
    true
}

/// # Safety
/// The CPU must support `isa`.
unsafe fn permute_for_gate_on(isa: Isa, states: &mut Lanes, sbox: &mut SboxInputs) {
    match isa {
        // SAFETY: the caller's guarantee.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::permute_for_gate(states, sbox) },
        // SAFETY: the caller's guarantee.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::permute_for_gate(states, sbox) },
        _ => permute_for_gate_scalar(states, sbox),
    }
}

/// The fallback, and the reference the vector versions are tested against: what plonky2's
/// `PoseidonGenerator` computes, one state at a time, with the base field's rounds (plonky2's
/// `poseidon`: the partial rounds in their sparse "fast" form, whose S-box inputs are the
/// textbook form's).
#[allow(clippy::needless_range_loop)] // `l` indexes the inner, lane, dimension
fn permute_for_gate_scalar(states: &mut Lanes, sbox: &mut SboxInputs) {
    use plonky2::hash::poseidon::Poseidon;
    for l in 0..LANES {
        let mut state: [F; SPONGE_WIDTH] = std::array::from_fn(|i| F::from_noncanonical_u64(states[i][l]));
        let mut k = 0;
        let mut record = |v: F, k: &mut usize| {
            sbox[*k][l] = v.to_canonical_u64();
            *k += 1;
        };
        let mut round = 0;
        for r in 0..HALF_N_FULL_ROUNDS {
            <F as Poseidon>::constant_layer(&mut state, round);
            if r != 0 {
                state.iter().for_each(|&v| record(v, &mut k));
            }
            <F as Poseidon>::sbox_layer(&mut state);
            state = <F as Poseidon>::mds_layer(&state);
            round += 1;
        }
        <F as Poseidon>::partial_first_constant_layer::<F, 1>(&mut state);
        state = <F as Poseidon>::mds_partial_layer_init::<F, 1>(&state);
        for r in 0..N_PARTIAL_ROUNDS {
            record(state[0], &mut k);
            state[0] = <F as Poseidon>::sbox_monomial::<F, 1>(state[0]);
            if r < N_PARTIAL_ROUNDS - 1 {
                state[0] += F::from_canonical_u64(<F as Poseidon>::FAST_PARTIAL_ROUND_CONSTANTS[r]);
            }
            state = <F as Poseidon>::mds_partial_layer_fast(&state, r);
        }
        round += N_PARTIAL_ROUNDS;
        for _ in 0..HALF_N_FULL_ROUNDS {
            <F as Poseidon>::constant_layer(&mut state, round);
            state.iter().for_each(|&v| record(v, &mut k));
            <F as Poseidon>::sbox_layer(&mut state);
            state = <F as Poseidon>::mds_layer(&state);
            round += 1;
        }
        debug_assert_eq!(k, GATE_SBOX_INPUTS);
        for (i, x) in state.iter().enumerate() {
            states[i][l] = x.to_canonical_u64();
        }
    }
}

/// The digest in the first four elements of lane `l`, canonical.
fn digest_of(states: &Lanes, l: usize) -> Digest {
    Digest {
        elements: std::array::from_fn(|i| {
            F::from_canonical_u64(F::from_noncanonical_u64(states[i][l]).to_canonical_u64())
        }),
    }
}

/// plonky2's `hash_or_noop` of every row: `out[r]` of the `width` elements at
/// `rows[r·width ..]`. Rows go eight at a time through [`permute`], in parallel.
///
/// # Panics
/// If `rows` does not hold `out.len()` rows of `width` (the backend checks shapes first).
pub fn hash_rows(rows: &[F], width: usize, out: &mut [Digest]) {
    assert_eq!(rows.len(), width * out.len(), "rows of {width} for {} digests", out.len());
    out.par_chunks_mut(LANES).enumerate().for_each(|(g, out)| {
        let first = g * LANES * width;
        hash_group(|l| &rows[first + l * width..first + (l + 1) * width], width, out);
    });
}

/// [`hash_rows`] over rows held as one `Vec` each (of any lengths; groups of equal lengths take
/// the lanes).
///
/// # Panics
/// If `out` is not one digest per leaf.
pub fn hash_leaves(leaves: &[Vec<F>], out: &mut [Digest]) {
    assert_eq!(leaves.len(), out.len(), "{} digests for {} leaves", out.len(), leaves.len());
    let width = leaves.first().map_or(0, Vec::len);
    out.par_chunks_mut(LANES).zip(leaves.par_chunks(LANES)).for_each(|(out, group)| {
        if group.iter().all(|l| l.len() == width) {
            hash_group(|l| &group[l], width, out);
        } else {
            for (o, leaf) in out.iter_mut().zip(group) {
                *o = PoseidonHash::hash_or_noop(leaf);
            }
        }
    });
}

/// [`hash_rows`] of the rows of a matrix held column by column: `out[r]` is plonky2's
/// `hash_or_noop` of `[columns[0][r], columns[1][r], …]`. Eight neighbouring rows are one
/// contiguous load from each column, so no row is ever gathered: the rayon backend hashes a
/// commitment's LDE where its NTT left it.
///
/// # Panics
/// If a column is not `out.len()` long.
pub fn hash_columns(columns: &[Vec<F>], out: &mut [Digest]) {
    let (rows, width) = (out.len(), columns.len());
    assert!(columns.iter().all(|c| c.len() == rows), "every column {rows} long: one digest per row");
    out.par_chunks_mut(LANES).enumerate().for_each(|(g, out)| {
        let first = g * LANES;
        if width <= NUM_HASH_OUT_ELTS || out.len() < LANES || !available() {
            for (l, o) in out.iter_mut().enumerate() {
                let row: Vec<F> = columns.iter().map(|c| c[first + l]).collect();
                *o = PoseidonHash::hash_or_noop(&row);
            }
            return;
        }
        // The next group's rows of each column are asked for while this group's permutations
        // run: a commitment's columns are more streams than the CPU's prefetchers follow, and
        // the permutation is longer than the reorder window, so without the hint every chunk's
        // loads waited on memory.
        let next = (first + 2 * LANES <= rows).then_some(first + LANES);
        // `hash_no_pad`, as in `hash_group`: each chunk of the rate overwrites the front of the
        // state; a chunk's eight rows of one column are one lane vector.
        let mut states: Lanes = [[0; LANES]; SPONGE_WIDTH];
        for chunk in columns.chunks(SPONGE_RATE) {
            for (lanes, column) in states.iter_mut().zip(chunk) {
                lanes.copy_from_slice(crate::lanes::words_of(&column[first..first + LANES]));
                if let Some(next) = next {
                    prefetch(&column[next]);
                    prefetch(&column[next + LANES - 1]);
                }
            }
            permute(&mut states);
        }
        for (l, o) in out.iter_mut().enumerate() {
            *o = digest_of(&states, l);
        }
    });
}

/// Asks the CPU to bring the cache line holding `x` into its caches: a hint, which changes no
/// result (a no-op on other architectures).
#[inline(always)]
pub(crate) fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch reads nothing the program sees and never faults; `x` is a reference.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((x as *const T).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// Hashes up to eight rows of `width` (`row(l)` for lane `l < out.len()`) into `out`.
#[allow(clippy::needless_range_loop)] // `l` indexes the inner, lane, dimension
fn hash_group<'a>(row: impl Fn(usize) -> &'a [F], width: usize, out: &mut [Digest]) {
    let used = out.len();
    // Short rows are their own digest; a lone row is not worth eight lanes.
    if width <= NUM_HASH_OUT_ELTS || used == 1 || !available() {
        for (l, o) in out.iter_mut().enumerate() {
            *o = PoseidonHash::hash_or_noop(row(l));
        }
        return;
    }
    // plonky2's `hash_no_pad`: from the zero state, each chunk of the rate overwrites the front
    // of the state, then a permutation. Unused lanes hash zeros and are dropped.
    let mut states: Lanes = [[0; LANES]; SPONGE_WIDTH];
    for start in (0..width).step_by(SPONGE_RATE) {
        let end = (start + SPONGE_RATE).min(width);
        for l in 0..used {
            for (i, x) in row(l)[start..end].iter().enumerate() {
                states[i][l] = x.to_noncanonical_u64();
            }
        }
        permute(&mut states);
    }
    for (l, o) in out.iter_mut().enumerate() {
        *o = digest_of(&states, l);
    }
}

/// plonky2's `two_to_one` of each pair: `out[i]` of `children[2i]` and `children[2i+1]`.
///
/// # Panics
/// If `children` is not two per digest of `out`.
pub fn hash_pairs(children: &[Digest], out: &mut [Digest]) {
    assert_eq!(children.len(), 2 * out.len(), "{} children for {} parents", children.len(), out.len());
    out.par_chunks_mut(LANES).zip(children.par_chunks(2 * LANES)).for_each(|(out, pairs)| {
        if out.len() == 1 || !available() {
            for (o, c) in out.iter_mut().zip(pairs.chunks(2)) {
                *o = PoseidonHash::two_to_one(c[0], c[1]);
            }
            return;
        }
        // `compress`: the two digests side by side in the zero state, one permutation.
        let mut states: Lanes = [[0; LANES]; SPONGE_WIDTH];
        for (l, c) in pairs.chunks(2).enumerate() {
            for i in 0..NUM_HASH_OUT_ELTS {
                states[i][l] = c[0].elements[i].to_noncanonical_u64();
                states[NUM_HASH_OUT_ELTS + i][l] = c[1].elements[i].to_noncanonical_u64();
            }
        }
        permute(&mut states);
        for (l, o) in out.iter_mut().enumerate() {
            *o = digest_of(&states, l);
        }
    });
}

/// plonky2's round constants with each partial round's constants for elements 1 to 11 carried
/// forward, so that a partial round adds one constant, element 0's, where the textbook form adds
/// twelve. The MDS layer is linear and the partial round's S-box reads element 0 alone, so a
/// constant added to element `i ≥ 1` before it can as well be added after it, multiplied
/// through the layer: `M(s + e) = M s + M e` (mod p). Round by round, the constants still owed
/// (`M e`) join the next round's; the last partial round's go into the first full round after
/// the partial ones, which adds a constant to every element anyway. Every S-box then reads
/// the value it reads in the textbook form (mod p), so the S-box inputs a Poseidon gate keeps
/// as wires are the same, and so is the output. Full rounds keep plonky2's constants, the one
/// after the partial rounds plus what they owe; a partial round's entries for elements 1 to 11
/// are zero and go unused. All are canonical.
pub(crate) const ROUND_CONSTANTS: [u64; N_ROUNDS * SPONGE_WIDTH] = carry_partial_constants();

const fn carry_partial_constants() -> [u64; N_ROUNDS * SPONGE_WIDTH] {
    const P: u128 = 0xFFFF_FFFF_0000_0001;
    let circ = <F as Poseidon>::MDS_MATRIX_CIRC;
    let diag = <F as Poseidon>::MDS_MATRIX_DIAG;
    let mut out = [0u64; N_ROUNDS * SPONGE_WIDTH];
    let mut k = 0;
    while k < out.len() {
        out[k] = (ALL_ROUND_CONSTANTS[k] as u128 % P) as u64;
        k += 1;
    }
    // The constants owed to the next round, canonical.
    let mut owed = [0u64; SPONGE_WIDTH];
    let mut round = HALF_N_FULL_ROUNDS;
    while round <= HALF_N_FULL_ROUNDS + N_PARTIAL_ROUNDS {
        let mut c = [0u64; SPONGE_WIDTH];
        let mut i = 0;
        while i < SPONGE_WIDTH {
            c[i] = ((out[round * SPONGE_WIDTH + i] as u128 + owed[i] as u128) % P) as u64;
            out[round * SPONGE_WIDTH + i] = c[i];
            i += 1;
        }
        if round == HALF_N_FULL_ROUNDS + N_PARTIAL_ROUNDS {
            break;
        }
        // A partial round keeps element 0's constant; the rest, (0, c[1..]), goes through the
        // MDS layer (plonky2's `mds_row_shf`: the circulant row and the diagonal) to the next.
        c[0] = 0;
        let mut r = 0;
        while r < SPONGE_WIDTH {
            let mut sum = diag[r] as u128 * c[r] as u128;
            let mut j = 0;
            while j < SPONGE_WIDTH {
                sum += circ[j] as u128 * c[(j + r) % SPONGE_WIDTH] as u128;
                j += 1;
            }
            owed[r] = (sum % P) as u64;
            r += 1;
        }
        let mut i = 1;
        while i < SPONGE_WIDTH {
            out[round * SPONGE_WIDTH + i] = 0;
            i += 1;
        }
        round += 1;
    }
    out
}

/// The proof-of-work search (see `Backend::grind`): the smallest candidate in
/// `start .. start + count` for which [`pow_response`] has at least `min_leading_zeros` leading
/// zeros, eight candidates per permutation. Candidates must be canonical.
pub fn grind(state: &[F; SPONGE_WIDTH], slot: usize, min_leading_zeros: u32, start: u64, count: u64) -> Option<u64> {
    let hit = |c: u64| pow_response(state, slot, c).to_canonical_u64().leading_zeros() >= min_leading_zeros;
    let blocks = count.div_ceil(LANES as u64);
    (0..blocks).into_par_iter().find_map_first(|b| {
        let first = start + b * LANES as u64;
        let last = (first + LANES as u64).min(start + count);
        if last - first < LANES as u64 || !available() {
            return (first..last).find(|&c| hit(c));
        }
        let mut states: Lanes = std::array::from_fn(|i| [state[i].to_noncanonical_u64(); LANES]);
        states[slot] = std::array::from_fn(|l| first + l as u64);
        permute(&mut states);
        (0..LANES)
            .find(|&l| {
                F::from_noncanonical_u64(states[SPONGE_RATE - 1][l]).to_canonical_u64().leading_zeros()
                    >= min_leading_zeros
            })
            .map(|l| first + l as u64)
    })
}

/// The lane MDS layer's body (see `mds` in [`lane_rounds`]), over the state `$s`, for the two
/// functions that expand it.
macro_rules! mds_body {
    ($s:ident) => {{
        let s = $s;
        const DIAG: [u64; SPONGE_WIDTH] = <F as Poseidon>::MDS_MATRIX_DIAG;
        const { assert!(DIAG[0] == 8 && DIAG[1] == 0 && DIAG[11] == 0) };
        let mask = splat(0xFFFF_FFFF);
        let mut lo = mds_freq(std::array::from_fn(|j| and64(s[j], mask)));
        let mut hi = mds_freq(std::array::from_fn(|j| shr::<32>(s[j])));
        lo[0] = add64(lo[0], shl::<3>(and64(s[0], mask)));
        hi[0] = add64(hi[0], shl::<3>(shr::<32>(s[0])));
        std::array::from_fn(|r| {
            // lo + hi·2^32 with hi = h·2^32 + hl: h·2^64 ≡ h·ε, and h·ε = h·2^32 − h (h
            // below 2^10). lo + h·ε is below 2^42, so only the last sum can carry.
            let h = shr::<32>(hi[r]);
            let lo = add64(lo[r], sub64(shl::<32>(h), h));
            add_canonical(shl::<32>(hi[r]), lo)
        })
    }};
}

/// The permutation's rounds on vectors of `W` lanes, over the lane arithmetic of the instruction
/// set in scope ([`crate::lanes`]). [`avx512`] and [`avx2`] expand this, so both run the same
/// rounds.
macro_rules! lane_rounds {
    ($feature:literal) => {
        use plonky2::hash::poseidon::{
            Poseidon, ALL_ROUND_CONSTANTS, HALF_N_FULL_ROUNDS, N_PARTIAL_ROUNDS, SPONGE_WIDTH,
        };

        use super::{Lanes, LANES, ROUND_CONSTANTS};
        use crate::F;

        /// `x·c` in wrapping 64-bit arithmetic, for the small constants of the MDS matrix in the
        /// frequency domain: shifts, adds and negations for the constants there, three
        /// 32-bit products for any other. `c` is a constant at every call, so the match folds.
        #[target_feature(enable = $feature)]
        #[inline]
        fn times(x: V, c: i64) -> V {
            let neg = |v: V| sub64(zero(), v);
            match c {
                1 => x,
                -1 => neg(x),
                2 => shl::<1>(x),
                -3 => neg(add64(x, shl::<1>(x))),
                -4 => neg(shl::<2>(x)),
                -8 => neg(shl::<3>(x)),
                16 => shl::<4>(x),
                17 => add64(x, shl::<4>(x)),
                32 => shl::<5>(x),
                _ => {
                    let c = splat(c as u64);
                    let cross = add64(mul32(shr::<32>(x), c), mul32(x, shr::<32>(c)));
                    add64(mul32(x, c), shl::<32>(cross))
                }
            }
        }

        /// plonky2's `mds_multiply_freq` (from winterfell), lane by lane: the circulant product of
        /// twelve values below 2^32 as three real 4-point FFTs, the products in the frequency
        /// domain with its pre-scaled constants (Karatsuba for the complex block), and three
        /// inverse FFTs. Signed 64-bit arithmetic, wrapping as plonky2's `i64`s would not need to.
        #[target_feature(enable = $feature)]
        #[inline]
        fn mds_freq(x: [V; SPONGE_WIDTH]) -> [V; SPONGE_WIDTH] {
            let add = |a: V, b: V| add64(a, b);
            let sub = |a: V, b: V| sub64(a, b);
            // fft4_real: (y0, (y1 real, y1 imaginary), y2).
            let fft4 = |a: V, b: V, c: V, d: V| {
                let (z0, z2, z1, z3) = (add(a, c), sub(a, c), add(b, d), sub(b, d));
                (add(z0, z1), (z2, sub(zero(), z3)), sub(z0, z1))
            };
            let (u0, u1, u2) = fft4(x[0], x[3], x[6], x[9]);
            let (u4, u5, u6) = fft4(x[1], x[4], x[7], x[10]);
            let (u8, u9, u10) = fft4(x[2], x[5], x[8], x[11]);

            // block1, constants [16, 32, 16].
            let [y0, y1, y2] = MDS_FREQ_BLOCK_ONE;
            let (a0, a1, a2) = (u0, u4, u8);
            let v0 = add(add(times(a0, y0), times(a1, y2)), times(a2, y1));
            let v4 = add(add(times(a0, y1), times(a1, y0)), times(a2, y2));
            let v8 = add(add(times(a0, y2), times(a1, y1)), times(a2, y0));

            // block2: complex products by Karatsuba, constants [(2, −1), (−4, 1), (16, 1)].
            let [(y0r, y0i), (y1r, y1i), (y2r, y2i)] = MDS_FREQ_BLOCK_TWO;
            let (y0s, y1s, y2s) = (y0r + y0i, y1r + y1i, y2r + y2i);
            let ((x0r, x0i), (x1r, x1i), (x2r, x2i)) = (u1, u5, u9);
            let (x0s, x1s, x2s) = (add(x0r, x0i), add(x1r, x1i), add(x2r, x2i));
            // `re`: m.0 − m.1; `cross(xs, ys, m)`: xs·ys − m.0 − m.1.
            let re = |m: (V, V)| sub(m.0, m.1);
            let cross = |xs: V, ys: i64, m: (V, V)| sub(sub(times(xs, ys), m.0), m.1);
            let im_neg = |m: (V, V)| sub(m.1, m.0);
            let m0 = (times(x0r, y0r), times(x0i, y0i));
            let m1 = (times(x1r, y2r), times(x1i, y2i));
            let m2 = (times(x2r, y1r), times(x2i, y1i));
            let v1 = (
                add(add(re(m0), cross(x1s, y2s, m1)), cross(x2s, y1s, m2)),
                add(add(cross(x0s, y0s, m0), im_neg(m1)), im_neg(m2)),
            );
            let m0 = (times(x0r, y1r), times(x0i, y1i));
            let m1 = (times(x1r, y0r), times(x1i, y0i));
            let m2 = (times(x2r, y2r), times(x2i, y2i));
            let v5 = (
                add(add(re(m0), re(m1)), cross(x2s, y2s, m2)),
                add(add(cross(x0s, y1s, m0), cross(x1s, y0s, m1)), im_neg(m2)),
            );
            let m0 = (times(x0r, y2r), times(x0i, y2i));
            let m1 = (times(x1r, y1r), times(x1i, y1i));
            let m2 = (times(x2r, y0r), times(x2i, y0i));
            let v9 = (
                add(add(re(m0), re(m1)), re(m2)),
                add(add(cross(x0s, y2s, m0), cross(x1s, y1s, m1)), cross(x2s, y0s, m2)),
            );

            // block3, constants [−1, −8, 2].
            let [y0, y1, y2] = MDS_FREQ_BLOCK_THREE;
            let (a0, a1, a2) = (u2, u6, u10);
            let v2 = sub(sub(times(a0, y0), times(a1, y2)), times(a2, y1));
            let v6 = sub(add(times(a0, y1), times(a1, y0)), times(a2, y2));
            let v10 = add(add(times(a0, y2), times(a1, y1)), times(a2, y0));

            // ifft4_real_unreduced.
            let ifft4 = |y0: V, y1: (V, V), y2: V| {
                let (z0, z1, z2, z3) = (add(y0, y2), sub(y0, y2), y1.0, sub(zero(), y1.1));
                [add(z0, z2), add(z1, z3), sub(z0, z2), sub(z1, z3)]
            };
            let [s0, s3, s6, s9] = ifft4(v0, v1, v2);
            let [s1, s4, s7, s10] = ifft4(v4, v5, v6);
            let [s2, s5, s8, s11] = ifft4(v8, v9, v10);
            [s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11]
        }

        const MDS_FREQ_BLOCK_ONE: [i64; 3] = [16, 32, 16];
        const MDS_FREQ_BLOCK_TWO: [(i64, i64); 3] = [(2, -1), (-4, 1), (16, 1)];
        const MDS_FREQ_BLOCK_THREE: [i64; 3] = [-1, -8, 2];

        /// plonky2's MDS layer for Goldilocks: the circulant product of the low and of the high
        /// 32-bit halves apart ([`mds_freq`], below 2^41 each), the diagonal's one entry (8, on
        /// element 0) added to both, then `lo + hi·2^32` reduced once. Only [`rounds`] calls it,
        /// so it is inlined there; the Poseidon gate has its own copy, [`mds_for_gate`].
        #[target_feature(enable = $feature)]
        #[inline]
        fn mds(s: &[V; SPONGE_WIDTH]) -> [V; SPONGE_WIDTH] {
            mds_body!(s)
        }

        /// [`mds`], for the Poseidon gate's constraints ([`crate::quotient_x8`]). The same body,
        /// a second function: with two callers LLVM left `mds` out of line in the rounds, which
        /// cost the permutation 10 % (4.19 → 4.61 µs for eight states on AVX-512).
        #[target_feature(enable = $feature)]
        pub(crate) fn mds_for_gate(s: &[V; SPONGE_WIDTH]) -> [V; SPONGE_WIDTH] {
            mds_body!(s)
        }

        /// `count` rounds from `*round`: each element takes its round constant, then the S-box
        /// (every element in a full round, element 0 in a partial one), then the MDS layer.
        ///
        /// The partial rounds are in this textbook form (plonky2's `partial_rounds_naive`, which
        /// its tests hold equal to the sparse "fast" form its `poseidon` runs): here the MDS
        /// layer, shifts in the frequency domain, costs less than the fast form's two products
        /// by full 64-bit constants per element (eight states: 4.6 µs against 6.2 µs on AVX-512,
        /// 7.1 µs against 9.1 µs on AVX2, before the squarings and shuffles above).
        #[target_feature(enable = $feature)]
        #[inline]
        fn rounds(s: &mut [V; SPONGE_WIDTH], round: &mut usize, count: usize, full: bool) {
            for _ in 0..count {
                if full {
                    for (i, x) in s.iter_mut().enumerate() {
                        *x = add_canonical(*x, splat(ROUND_CONSTANTS[i + SPONGE_WIDTH * *round]));
                    }
                    s.iter_mut().for_each(|x| *x = sbox(*x));
                } else {
                    s[0] = sbox(add_canonical(s[0], splat(ROUND_CONSTANTS[SPONGE_WIDTH * *round])));
                }
                *s = mds(s);
                *round += 1;
            }
        }

        /// [`rounds`], writing each round's S-box inputs (canonical) to the vector at lane
        /// offset `part` of `recorded`, one round per chunk: twelve per full round, one per partial round. Its MDS layer
        /// is [`mds_for_gate`], out of line: a second caller of [`mds`] would cost the
        /// permutation (above).
        #[target_feature(enable = $feature)]
        #[inline]
        fn rounds_recording(
            s: &mut [V; SPONGE_WIDTH],
            round: &mut usize,
            full: bool,
            recorded: &mut [[u64; LANES]],
            part: usize,
        ) {
            let per_round = if full { SPONGE_WIDTH } else { 1 };
            for inputs in recorded.chunks_mut(per_round) {
                let constants = &ROUND_CONSTANTS[SPONGE_WIDTH * *round..][..per_round];
                for (x, &c) in s.iter_mut().zip(constants) {
                    *x = add_canonical(*x, splat(c));
                }
                for (input, x) in inputs.iter_mut().zip(s.iter()) {
                    store(&mut input[part..], canonical(*x));
                }
                if full {
                    s.iter_mut().for_each(|x| *x = sbox(*x));
                } else {
                    s[0] = sbox(s[0]);
                }
                *s = mds_for_gate(s);
                *round += 1;
            }
        }

        /// plonky2's permutation of the eight states, `W` at a time, writing the S-box inputs
        /// plonky2's `PoseidonGate` keeps as wires ([`super::permute_for_gate`]); the states
        /// are left canonical.
        ///
        /// # Safety
        /// The CPU must have the module's instruction set.
        #[target_feature(enable = $feature)]
        pub unsafe fn permute_for_gate(states: &mut Lanes, sbox: &mut super::SboxInputs) {
            let (first, rest) = sbox.split_at_mut(SPONGE_WIDTH * (HALF_N_FULL_ROUNDS - 1));
            let (partial, last) = rest.split_at_mut(N_PARTIAL_ROUNDS);
            for part in (0..LANES).step_by(W) {
                let mut s: [V; SPONGE_WIDTH] = std::array::from_fn(|i| load(&states[i][part..]));
                let mut round = 0;
                // The first round's inputs are the gate's inputs (after the swap): not wires of
                // their own.
                let mut unused = [[0u64; LANES]; SPONGE_WIDTH];
                rounds_recording(&mut s, &mut round, true, &mut unused, part);
                rounds_recording(&mut s, &mut round, true, first, part);
                rounds_recording(&mut s, &mut round, false, partial, part);
                rounds_recording(&mut s, &mut round, true, last, part);
                debug_assert_eq!(round, ALL_ROUND_CONSTANTS.len() / SPONGE_WIDTH);
                for (row, v) in states.iter_mut().zip(s) {
                    store(&mut row[part..], canonical(v));
                }
            }
        }

        /// `a + b` for canonical `b`, `a·b`, `b²` and the wrapping `a·b[0]`, lane by lane, for
        /// the tests.
        ///
        /// # Safety
        /// The CPU must have the module's instruction set.
        #[cfg(test)]
        #[target_feature(enable = $feature)]
        pub unsafe fn arithmetic(a: &[u64; LANES], b: &[u64; LANES]) -> [[u64; LANES]; 4] {
            let mut out = [[0u64; LANES]; 4];
            for part in (0..LANES).step_by(W) {
                let (va, vb) = (load(&a[part..]), load(&b[part..]));
                let results = [add_canonical(va, vb), mul(va, vb), square(vb), times(va, b[0] as i64)];
                for (o, v) in out.iter_mut().zip(results) {
                    store(&mut o[part..], v);
                }
            }
            out
        }

        /// The MDS layer of each of the eight states, for the tests.
        ///
        /// # Safety
        /// The CPU must have the module's instruction set.
        #[cfg(test)]
        #[target_feature(enable = $feature)]
        pub unsafe fn mds_layer(states: &mut Lanes) {
            for part in (0..LANES).step_by(W) {
                let s: [V; SPONGE_WIDTH] = std::array::from_fn(|i| load(&states[i][part..]));
                for (row, v) in states.iter_mut().zip(mds(&s)) {
                    store(&mut row[part..], v);
                }
            }
        }

        /// plonky2's permutation of the eight states, `W` at a time.
        ///
        /// # Safety
        /// The CPU must have the module's instruction set.
        #[target_feature(enable = $feature)]
        pub unsafe fn permute(states: &mut Lanes) {
            for part in (0..LANES).step_by(W) {
                let mut s: [V; SPONGE_WIDTH] = std::array::from_fn(|i| load(&states[i][part..]));
                let mut round = 0;
                rounds(&mut s, &mut round, HALF_N_FULL_ROUNDS, true);
                rounds(&mut s, &mut round, N_PARTIAL_ROUNDS, false);
                rounds(&mut s, &mut round, HALF_N_FULL_ROUNDS, true);
                debug_assert_eq!(round, ALL_ROUND_CONSTANTS.len() / SPONGE_WIDTH);
                for (row, v) in states.iter_mut().zip(s) {
                    store(&mut row[part..], v);
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    //! The rounds on eight lanes of `__m512i`. Every function needs AVX-512F; the entries are
    //! `unsafe` for that reason alone.

    use crate::lanes::avx512::*;

    lane_rounds!("avx512f");
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    //! The rounds on four lanes of `__m256i` (the eight states in two passes). Every function
    //! needs AVX2; the entries are `unsafe` for that reason alone.

    use crate::lanes::avx2::*;

    lane_rounds!("avx2");
}

#[cfg(test)]
mod tests {
    use plonky2::field::types::Field64;
    use plonky2::hash::poseidon::Poseidon;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// The carried constants, recomputed with plonky2's own field arithmetic and MDS layer:
    /// every partial round adds element 0's constant alone, and the textbook partial rounds with
    /// plonky2's constants equal the carried ones on any state (element 0 after every round, as
    /// the S-boxes read it, and the whole state after the first full round that follows).
    #[test]
    fn carried_round_constants_are_the_textbook_rounds() {
        let constant = |k: usize| F::from_canonical_u64(ROUND_CONSTANTS[k]);
        let mut owed = [F::ZERO; SPONGE_WIDTH];
        let first_partial = HALF_N_FULL_ROUNDS;
        for round in first_partial..first_partial + N_PARTIAL_ROUNDS {
            let c: [F; SPONGE_WIDTH] = std::array::from_fn(|i| {
                F::from_noncanonical_u64(ALL_ROUND_CONSTANTS[round * SPONGE_WIDTH + i]) + owed[i]
            });
            assert_eq!(constant(round * SPONGE_WIDTH), c[0], "round {round}, element 0");
            for i in 1..SPONGE_WIDTH {
                assert_eq!(ROUND_CONSTANTS[round * SPONGE_WIDTH + i], 0, "round {round}, element {i}");
            }
            let mut rest = c;
            rest[0] = F::ZERO;
            owed = F::mds_layer(&rest);
        }
        let after = first_partial + N_PARTIAL_ROUNDS;
        for i in 0..SPONGE_WIDTH {
            let plonky2 = F::from_noncanonical_u64(ALL_ROUND_CONSTANTS[after * SPONGE_WIDTH + i]);
            assert_eq!(constant(after * SPONGE_WIDTH + i), plonky2 + owed[i], "round {after}, element {i}");
        }
        for k in (0..first_partial * SPONGE_WIDTH).chain((after + 1) * SPONGE_WIDTH..ROUND_CONSTANTS.len()) {
            assert_eq!(ROUND_CONSTANTS[k], ALL_ROUND_CONSTANTS[k] % F::ORDER, "full rounds keep plonky2's");
        }
        assert!(ROUND_CONSTANTS.iter().all(|&c| c < F::ORDER), "canonical");

        // The two forms side by side, from a random state through the partial rounds and the
        // next full round's constants.
        let mut rng = StdRng::seed_from_u64(7);
        let start: [F; SPONGE_WIDTH] = std::array::from_fn(|_| F::from_noncanonical_u64(element(&mut rng)));
        let (mut textbook, mut carried) = (start, start);
        for round in first_partial..after {
            for i in 0..SPONGE_WIDTH {
                textbook[i] += F::from_noncanonical_u64(ALL_ROUND_CONSTANTS[round * SPONGE_WIDTH + i]);
            }
            carried[0] += constant(round * SPONGE_WIDTH);
            assert_eq!(carried[0], textbook[0], "the S-box input of round {round}");
            textbook[0] = textbook[0].exp_u64(7);
            carried[0] = carried[0].exp_u64(7);
            textbook = F::mds_layer(&textbook);
            carried = F::mds_layer(&carried);
        }
        for i in 0..SPONGE_WIDTH {
            textbook[i] += F::from_noncanonical_u64(ALL_ROUND_CONSTANTS[after * SPONGE_WIDTH + i]);
            carried[i] += constant(after * SPONGE_WIDTH + i);
        }
        assert_eq!(carried, textbook, "the state entering round {after}'s S-boxes");
    }

    /// Any u64, not only canonical ones: plonky2's representatives reach up to 2^64 − 1, and
    /// the edges are where carries go wrong.
    fn element(rng: &mut StdRng) -> u64 {
        match rng.gen_range(0..8) {
            0 => F::ORDER - 1 - rng.gen_range(0..4),
            1 => u64::MAX - rng.gen_range(0..(1 << 33)),
            2 => rng.gen_range(0..4),
            3 => 0xFFFF_FFFF_0000_0000 + rng.gen_range(0..4),
            _ => rng.gen(),
        }
    }

    /// The lane arithmetic against plonky2's field on every pair of edge values: carries out
    /// of each partial product, borrows in the reductions, unreduced sums of products past
    /// 2^128, the wrapping products of the frequency-domain MDS.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn lane_arithmetic_is_plonky2s_at_the_edges() {
        type Arithmetic = unsafe fn(&[u64; LANES], &[u64; LANES]) -> [[u64; LANES]; 4];
        for (isa, arithmetic) in [(Isa::Avx512, avx512::arithmetic as Arithmetic), (Isa::Avx2, avx2::arithmetic)] {
            if isa.supported() {
                // SAFETY: the CPU has the instruction set (checked just above).
                check_lane_arithmetic(|a, b| unsafe { arithmetic(a, b) });
            } else {
                eprintln!("{} skipped: this CPU lacks it", isa.name());
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn check_lane_arithmetic(arithmetic: impl Fn(&[u64; LANES], &[u64; LANES]) -> [[u64; LANES]; 4]) {
        // The frequency-domain MDS constants, as the wrapping multiplier's special cases.
        let mut edges: Vec<u64> = [-1i64, -3, -4, -8, 16, 17, 32].iter().map(|&c| c as u64).collect();
        edges.extend(edge_values());
        let mut rng = StdRng::seed_from_u64(11);
        edges.extend((0..6).map(|_| rng.gen::<u64>()));
        let p = F::ORDER;
        for &x in &edges {
            // Every edge value as `b[0]` (the wrapping multiplier's constant).
            for k in 0..edges.len() {
                let b: [u64; LANES] = std::array::from_fn(|l| edges[(k + l) % edges.len()]);
                let a = [x; LANES];
                let [sum_canonical, product, square, wrapping] = arithmetic(&a, &b);
                for l in 0..LANES {
                    assert_eq!(wrapping[l], a[l].wrapping_mul(b[0]), "{:#x} · {:#x} mod 2^64", a[l], b[0]);
                    let (fa, fb) = (F::from_noncanonical_u64(a[l]), F::from_noncanonical_u64(b[l]));
                    assert_eq!(F::from_noncanonical_u64(product[l]), fa * fb, "{:#x} · {:#x}", a[l], b[l]);
                    assert_eq!(F::from_noncanonical_u64(square[l]), fb * fb, "{:#x}²", b[l]);
                    if b[l] < p {
                        assert_eq!(F::from_noncanonical_u64(sum_canonical[l]), fa + fb, "{:#x} + {:#x}", a[l], b[l]);
                    }
                }
            }
        }
    }

    /// Values around the field's order, 2^32 and 2^64, where carries and borrows happen.
    fn edge_values() -> [u64; 18] {
        let p = F::ORDER;
        [
            0,
            1,
            2,
            3,
            (1 << 32) - 1,
            1 << 32,
            (1 << 32) + 1,
            1 << 48,
            (1 << 63) - 1,
            1 << 63,
            p - 2,
            p - 1,
            p,
            p + 1,
            u64::MAX - (1 << 32),
            u64::MAX - 1,
            u64::MAX,
            0xFFFF_FFFF_FFFF_0000,
        ]
    }

    /// The MDS layer on states of edge values (its sums of halves at their largest, its final
    /// carry and reduction) and random ones, against plonky2's `mds_layer`.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_lane_mds_layer_is_plonky2s() {
        use plonky2::hash::poseidon::Poseidon;
        type MdsLayer = unsafe fn(&mut Lanes);
        let edges = edge_values();
        let mut rng = StdRng::seed_from_u64(12);
        let mut inputs: Vec<Lanes> = (0..edges.len())
            .map(|k| std::array::from_fn(|i| std::array::from_fn(|l| edges[(k + i + 5 * l) % edges.len()])))
            .collect();
        inputs.push([[u64::MAX; LANES]; SPONGE_WIDTH]);
        inputs.push([[F::ORDER - 1; LANES]; SPONGE_WIDTH]);
        inputs.extend((0..20).map(|_| std::array::from_fn(|_| std::array::from_fn(|_| rng.gen::<u64>()))));
        for (isa, mds_layer) in [(Isa::Avx512, avx512::mds_layer as MdsLayer), (Isa::Avx2, avx2::mds_layer)] {
            if !isa.supported() {
                eprintln!("{} skipped: this CPU lacks it", isa.name());
                continue;
            }
            for input in &inputs {
                let mut out = *input;
                // SAFETY: the CPU has the instruction set (checked above).
                unsafe { mds_layer(&mut out) };
                for l in 0..LANES {
                    let state: [F; SPONGE_WIDTH] = std::array::from_fn(|i| F::from_noncanonical_u64(input[i][l]));
                    let expected = <F as Poseidon>::mds_layer(&state);
                    for i in 0..SPONGE_WIDTH {
                        assert_eq!(
                            F::from_noncanonical_u64(out[i][l]),
                            expected[i],
                            "{} lane {l} element {i}",
                            isa.name()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_eight_lane_permutation_is_plonky2s() {
        let mut rng = StdRng::seed_from_u64(8);
        for _ in 0..200 {
            let input: Lanes = std::array::from_fn(|_| std::array::from_fn(|_| element(&mut rng)));
            for isa in Isa::ALL {
                let mut lanes = input;
                if !permute_with(isa, &mut lanes) {
                    continue;
                }
                for l in 0..LANES {
                    let state: [F; SPONGE_WIDTH] = std::array::from_fn(|i| F::from_noncanonical_u64(input[i][l]));
                    let expected = F::poseidon(state);
                    for i in 0..SPONGE_WIDTH {
                        assert_eq!(
                            F::from_noncanonical_u64(lanes[i][l]),
                            expected[i],
                            "{isa:?}, lane {l}, element {i}"
                        );
                    }
                }
            }
        }
        for isa in Isa::ALL.into_iter().filter(|isa| !isa.supported()) {
            eprintln!("{} skipped: this CPU lacks it", isa.name());
        }
    }

    /// The gate's S-box inputs on lanes (the textbook partial rounds) equal plonky2's generator's
    /// (the sparse form), on random states and on states of edge values, and the outputs are the
    /// permutation's, canonical.
    #[test]
    #[allow(clippy::needless_range_loop)] // `l` indexes the inner, lane, dimension
    fn the_gate_witness_on_lanes_is_plonky2s() {
        let mut rng = StdRng::seed_from_u64(11);
        let edges = edge_values();
        for round in 0..100 {
            let input: Lanes = std::array::from_fn(|i| {
                std::array::from_fn(|l| {
                    if round < 2 {
                        edges[(i + l + round * 7) % edges.len()]
                    } else {
                        element(&mut rng)
                    }
                })
            });
            let mut expected_states = input;
            let mut expected = [[0u64; LANES]; GATE_SBOX_INPUTS];
            permute_for_gate_scalar(&mut expected_states, &mut expected);
            for l in 0..LANES {
                let state: [F; SPONGE_WIDTH] = std::array::from_fn(|i| F::from_noncanonical_u64(input[i][l]));
                let out = F::poseidon(state);
                assert!((0..SPONGE_WIDTH).all(|i| expected_states[i][l] == out[i].to_canonical_u64()), "lane {l}");
            }
            for isa in Isa::ALL {
                let mut states = input;
                let mut sbox = [[u64::MAX; LANES]; GATE_SBOX_INPUTS];
                if !permute_for_gate_with(isa, &mut states, &mut sbox) {
                    continue;
                }
                assert_eq!(states, expected_states, "{isa:?} outputs, round {round}");
                for k in 0..GATE_SBOX_INPUTS {
                    assert_eq!(sbox[k], expected[k], "{isa:?} S-box input {k}, round {round}");
                }
            }
        }
    }

    #[test]
    fn rows_leaves_columns_and_pairs_hash_as_plonky2() {
        let mut rng = StdRng::seed_from_u64(9);
        // Widths around the rate and the no-op limit, and row counts that leave a short last
        // group of lanes.
        for width in [1, 4, 5, 8, 9, 16, 17, 135] {
            for rows in [1, 7, 8, 9, 35] {
                let flat: Vec<F> = (0..rows * width).map(|_| F::from_noncanonical_u64(element(&mut rng))).collect();
                let expected: Vec<Digest> = flat.chunks(width).map(PoseidonHash::hash_or_noop).collect();
                let mut out = vec![Digest::default(); rows];
                hash_rows(&flat, width, &mut out);
                assert_eq!(out, expected, "{rows} rows of {width}");
                let leaves: Vec<Vec<F>> = flat.chunks(width).map(<[F]>::to_vec).collect();
                let mut out = vec![Digest::default(); rows];
                hash_leaves(&leaves, &mut out);
                assert_eq!(out, expected, "{rows} leaves of {width}");
                // Digests are written canonical, as plonky2's serialisation reads them.
                assert!(out.iter().flat_map(|d| d.elements).all(|x| x.0 < F::ORDER));
            }
        }
        // The same rows held as columns: rows past the last full group of eight, and widths
        // that end mid-chunk of the rate.
        for width in [1, 4, 5, 8, 9, 17, 135] {
            for rows in [1, 8, 13, 32] {
                let columns: Vec<Vec<F>> = (0..width)
                    .map(|_| (0..rows).map(|_| F::from_noncanonical_u64(element(&mut rng))).collect())
                    .collect();
                let expected: Vec<Digest> = (0..rows)
                    .map(|r| PoseidonHash::hash_or_noop(&columns.iter().map(|c| c[r]).collect::<Vec<_>>()))
                    .collect();
                let mut out = vec![Digest::default(); rows];
                hash_columns(&columns, &mut out);
                assert_eq!(out, expected, "{rows} rows of {width} as columns");
            }
        }
        for pairs in [1, 3, 8, 21] {
            let children: Vec<Digest> = (0..2 * pairs)
                .map(|_| Digest { elements: std::array::from_fn(|_| F::from_noncanonical_u64(element(&mut rng))) })
                .collect();
            let expected: Vec<Digest> = children.chunks(2).map(|c| PoseidonHash::two_to_one(c[0], c[1])).collect();
            let mut out = vec![Digest::default(); pairs];
            hash_pairs(&children, &mut out);
            assert_eq!(out, expected, "{pairs} pairs");
        }
    }

    #[test]
    fn grind_finds_the_first_witness() {
        let mut rng = StdRng::seed_from_u64(10);
        let state: [F; SPONGE_WIDTH] = std::array::from_fn(|_| F::from_noncanonical_u64(element(&mut rng)));
        for (slot, zeros, start, count) in [(0, 6, 0, 1000), (3, 8, 5, 3000), (7, 4, 13, 21), (2, 30, 0, 100)] {
            let expected = (start..start + count)
                .find(|&c| pow_response(&state, slot, c).to_canonical_u64().leading_zeros() >= zeros);
            assert_eq!(grind(&state, slot, zeros, start, count), expected, "slot {slot}, {zeros} zeros from {start}");
        }
    }
}
