//! plonky2's FFT, its butterflies on vector lanes: the rayon backend's NTTs and coset LDEs.
//!
//! plonky2 1.1 runs its radix-2 FFT (decimation in time over bit-reversed input, with its root
//! tables) one butterfly at a time unless the whole build targets AVX2 or AVX-512. Here the same
//! layers run on [`crate::lanes`], `W` butterflies per vector, on this CPU's best instruction set
//! ([`isa`], detected at run time), so the generic binary that runs everywhere takes the vector
//! path where the CPU has one. The layers whose butterflies span fewer than `W` elements, and
//! every layer on a CPU with neither instruction set, are scalar.
//!
//! The output is plonky2's exactly (the same values, made canonical): the layers are the same
//! transform, and every value is exact arithmetic modulo p. Two changes of order, each exact:
//! - the LDE writes each coefficient, times its power of the coset shift, straight into the
//!   `2^rate_bits` bit-reversed slots that plonky2's zero-skipping copy would fill, rather than
//!   padding, bit-reversing and copying in three passes;
//! - the layers whose butterflies span less than a block of 2^[`BLOCK_BITS`] elements run block
//!   by block, each block through all of them while it is in cache, then the wider layers run
//!   over the whole polynomial.
//!
//! Butterflies keep values canonical (`u ± ω·v` each reduced below p), so an addition needs one
//! carry and a subtraction one borrow.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use plonky2::field::fft::{fft_root_table, FftRootTable};
use plonky2::field::types::{Field, PrimeField64};
use plonky2::util::{log2_strict, reverse_index_bits_in_place};

use crate::lanes::{isa, width, words, words_of, Isa};
use crate::F;

/// Layers whose butterflies span less than 2^BLOCK_BITS elements run block by block: a block of
/// 2^12 values is 32 KiB, an L1 data cache.
pub const BLOCK_BITS: usize = 12;

/// plonky2's FFT root tables, one per size, shared by every call.
pub fn root_table(n: usize) -> Arc<FftRootTable<F>> {
    static TABLES: OnceLock<Mutex<HashMap<usize, Arc<FftRootTable<F>>>>> = OnceLock::new();
    let tables = TABLES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut t = tables.lock().unwrap_or_else(|p| p.into_inner());
    t.entry(n).or_insert_with(|| Arc::new(fft_root_table(n))).clone()
}

/// Most tables [`shift_powers`] keeps (a proof uses a handful: the coset shift and its powers
/// for FRI's layers, at a few sizes); past it the cache starts again, so that callers with
/// ever new shifts cannot grow it without bound.
const MAX_SHIFT_TABLES: usize = 64;

/// `[1, s, s², …]` of length `n`, shared by every call with the same `s` and `n`.
pub fn shift_powers(shift: F, n: usize) -> Arc<Vec<F>> {
    type Powers = HashMap<(u64, usize), Arc<Vec<F>>>;
    static POWERS: OnceLock<Mutex<Powers>> = OnceLock::new();
    let powers = POWERS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut p = powers.lock().unwrap_or_else(|p| p.into_inner());
    let key = (shift.to_canonical_u64(), n);
    if !p.contains_key(&key) && p.len() >= MAX_SHIFT_TABLES {
        p.clear();
    }
    p.entry(key).or_insert_with(|| Arc::new(crate::cpu::powers(shift, n))).clone()
}

/// plonky2's `fft_with_options(coeffs, None, table)`: the values at `ω^i`, natural order, in
/// place. `values.len()` is a power of two and `table` its root table.
pub fn fft(values: &mut [F], table: &FftRootTable<F>) {
    fft_on(isa(), values, table);
}

/// [`fft`] on `isa`.
fn fft_on(isa: Isa, values: &mut [F], table: &FftRootTable<F>) {
    reverse_index_bits_in_place(values);
    canonicalize(values);
    layers(isa, words(values), 0, table);
}

/// plonky2's `coset_fft_with_options(shift, None, table)` in place: `values` (coefficients)
/// times `powers` (`[1, shift, shift², …]`, as long), then [`fft`].
pub fn coset_fft(values: &mut [F], powers: &[F], table: &FftRootTable<F>) {
    assert_eq!(values.len(), powers.len(), "one power of the shift per coefficient");
    values.iter_mut().zip(powers).for_each(|(v, p)| *v *= *p);
    fft(values, table);
}

/// plonky2's `ifft_with_options(values, None, table)`: the coefficients, in place.
pub fn ifft(values: &mut [F], table: &FftRootTable<F>) {
    let n = values.len();
    fft(values, table);
    // As plonky2: every value but the first in reverse order, each divided by n.
    let n_inv = F::inverse_2exp(log2_strict(n));
    values[1..].reverse();
    values.iter_mut().for_each(|v| *v *= n_inv);
}

/// plonky2's `coeffs.lde(rate_bits).coset_fft_with_options(shift, Some(rate_bits), table)`,
/// into `out` (`coeffs.len() << rate_bits` values): `powers` is `[1, shift, shift², …]`, one per
/// coefficient, and `table` the root table of `out.len()`.
pub fn coset_lde(coeffs: &[F], rate_bits: usize, powers: &[F], table: &FftRootTable<F>, out: &mut [F]) {
    coset_lde_on(isa(), coeffs, rate_bits, powers, table, out);
}

/// [`coset_lde`] on `isa`.
fn coset_lde_on(isa: Isa, coeffs: &[F], rate_bits: usize, powers: &[F], table: &FftRootTable<F>, out: &mut [F]) {
    let n = coeffs.len();
    let lg_m = log2_strict(n) + rate_bits;
    assert_eq!(out.len(), n << rate_bits, "an LDE of {n} coefficients at rate 2^-{rate_bits}");
    assert_eq!(powers.len(), n, "one power of the shift per coefficient");
    let spread = 1 << rate_bits;
    for (i, (c, p)) in coeffs.iter().zip(powers).enumerate() {
        // Coefficient i sits at reverse_bits(i) after plonky2's bit reversal (a multiple of
        // 2^rate_bits, since i < n) and its zero-skipping copy fills the slots after it.
        let at = i.reverse_bits().checked_shr(usize::BITS - lg_m as u32).unwrap_or(0);
        let v = F::from_canonical_u64((*c * *p).to_canonical_u64());
        out[at..at + spread].fill(v);
    }
    layers(isa, words(out), rate_bits, table);
}

/// Every value canonical, for the butterflies.
fn canonicalize(values: &mut [F]) {
    values.iter_mut().for_each(|v| *v = F::from_canonical_u64(v.to_canonical_u64()));
}

/// The layers from `first` (the span of their butterflies 2^first) to the last, on canonical,
/// bit-reversed values, on `isa`: plonky2's `fft_classic` after its bit reversal and
/// zero-skipping copy.
///
/// # Panics
/// If the CPU lacks `isa` (the vector layers would be undefined behaviour), or `table` is not
/// the root table of `values.len()`.
fn layers(isa: Isa, values: &mut [u64], first: usize, table: &FftRootTable<F>) {
    assert!(isa.supported(), "this CPU has no {}", isa.name());
    let lg_n = log2_strict(values.len());
    assert_eq!(table.len(), lg_n, "a root table of the polynomial's size");
    let lg_block = lg_n.min(BLOCK_BITS);
    if first < lg_block {
        for block in values.chunks_mut(1 << lg_block) {
            for lg_half in first..lg_block {
                // SAFETY: checked above.
                unsafe { layer(isa, block, lg_half, table) };
            }
        }
    }
    for lg_half in first.max(lg_block)..lg_n {
        // SAFETY: checked above.
        unsafe { layer(isa, values, lg_half, table) };
    }
}

/// One layer on `isa`: butterflies of span `2^lg_half`, twiddles the powers of the
/// `2^(lg_half + 1)`-th root of unity.
///
/// # Safety
/// The CPU must have `isa`.
unsafe fn layer(isa: Isa, values: &mut [u64], lg_half: usize, table: &FftRootTable<F>) {
    let (omegas, half) = (words_of(&table[lg_half]), 1 << lg_half);
    // Butterflies that span less than a vector stay scalar.
    let vector = width(isa).is_some_and(|w| half >= w);
    match isa {
        // SAFETY: the caller's guarantee.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if vector => unsafe { avx512::layer(values, half, omegas) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if vector => unsafe { avx2::layer(values, half, omegas) },
        _ => layer_scalar(values, half, omegas),
    }
}

/// [`layer`] one butterfly at a time.
fn layer_scalar(values: &mut [u64], half: usize, omegas: &[u64]) {
    let canonical = |x: F| x.to_canonical_u64();
    for block in values.chunks_exact_mut(2 * half) {
        let (lo, hi) = block.split_at_mut(half);
        for ((u, v), w) in lo.iter_mut().zip(hi.iter_mut()).zip(omegas) {
            let t = F::from_noncanonical_u64(*v) * F::from_noncanonical_u64(*w);
            let u0 = F::from_noncanonical_u64(*u);
            *u = canonical(u0 + t);
            *v = canonical(u0 - t);
        }
    }
}

/// The butterflies on vectors of `W` lanes, over the lane arithmetic in scope.
macro_rules! lane_ntt {
    ($feature:literal) => {
        #[cfg(test)]
        use crate::poseidon_x8::LANES;

        /// `(u + ω·v, u − ω·v)`, canonical, for canonical `u`. The product is reduced below p
        /// first: the subtraction's one borrow is exact only for a canonical subtrahend (a
        /// product's representative can be up to 2^64 − 1).
        #[target_feature(enable = $feature)]
        #[inline]
        fn butterfly(u: V, v: V, omega: V) -> (V, V) {
            let t = canonical(mul(v, omega));
            (add_mod(u, t), sub_mod(u, t))
        }

        /// One layer of butterflies of span `half` (a multiple of `W`), on canonical values.
        ///
        /// # Safety
        /// The CPU must have the module's instruction set.
        #[target_feature(enable = $feature)]
        pub unsafe fn layer(values: &mut [u64], half: usize, omegas: &[u64]) {
            for block in values.chunks_exact_mut(2 * half) {
                let (lo, hi) = block.split_at_mut(half);
                for j in (0..half).step_by(W) {
                    let (sum, difference) = butterfly(load(&lo[j..]), load(&hi[j..]), load(&omegas[j..]));
                    store(&mut lo[j..], sum);
                    store(&mut hi[j..], difference);
                }
            }
        }

        /// [`butterfly`] lane by lane, for the tests.
        ///
        /// # Safety
        /// The CPU must have the module's instruction set.
        #[cfg(test)]
        #[target_feature(enable = $feature)]
        pub unsafe fn butterflies(u: &[u64; LANES], v: &[u64; LANES], omega: &[u64; LANES]) -> [[u64; LANES]; 2] {
            let mut out = [[0u64; LANES]; 2];
            for part in (0..LANES).step_by(W) {
                let (sum, difference) = butterfly(load(&u[part..]), load(&v[part..]), load(&omega[part..]));
                store(&mut out[0][part..], sum);
                store(&mut out[1][part..], difference);
            }
            out
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! The butterflies on eight lanes of `__m512i`.

    use crate::lanes::avx512::*;

    lane_ntt!("avx512f");
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The butterflies on four lanes of `__m256i`.

    use crate::lanes::avx2::*;

    lane_ntt!("avx2");
}

#[cfg(test)]
mod tests {
    use plonky2::field::fft::{fft_with_options, ifft_with_options};
    use plonky2::field::polynomial::{PolynomialCoeffs, PolynomialValues};
    use plonky2::field::types::Field64;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Random representatives, a quarter of them at or above p (plonky2's values need not be
    /// canonical), and a few at the edges.
    fn values(rng: &mut StdRng, n: usize) -> Vec<F> {
        (0..n)
            .map(|_| {
                F::from_noncanonical_u64(match rng.gen_range(0..8) {
                    0 | 1 => rng.gen_range(F::ORDER..=u64::MAX),
                    2 => [0, 1, F::ORDER - 1, F::ORDER, u64::MAX][rng.gen_range(0..5)],
                    _ => rng.gen_range(0..F::ORDER),
                })
            })
            .collect()
    }

    fn supported() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|isa| isa.supported()).collect()
    }

    /// Sizes from one coefficient to past a block ([`BLOCK_BITS`]), at every rate, on each
    /// instruction set this CPU has, against plonky2's zero-skipping coset LDE.
    #[test]
    fn coset_lde_is_plonky2s_on_every_instruction_set() {
        let mut rng = StdRng::seed_from_u64(21);
        let shift = F::coset_shift();
        for lg_n in [0, 1, 2, 3, 4, 5, 8, 10, 11, 12, 13] {
            for rate_bits in 0..=4 {
                let n = 1 << lg_n;
                let m = n << rate_bits;
                let coeffs = values(&mut rng, n);
                let expected = PolynomialCoeffs::new(coeffs.clone())
                    .lde(rate_bits)
                    .coset_fft_with_options(shift, Some(rate_bits), None)
                    .values;
                let table = root_table(m);
                let powers = shift_powers(shift, n);
                for isa in supported() {
                    let mut out = vec![F::ZERO; m];
                    coset_lde_on(isa, &coeffs, rate_bits, &powers, &table, &mut out);
                    assert_eq!(out, expected, "{} 2^{lg_n} at rate 2^-{rate_bits}", isa.name());
                    assert!(out.iter().all(|v| v.0 < F::ORDER), "canonical output");
                }
            }
        }
    }

    /// The plain FFT on each instruction set, and the inverse and coset FFTs built on it.
    #[test]
    fn fft_ifft_and_coset_fft_are_plonky2s() {
        let mut rng = StdRng::seed_from_u64(22);
        for lg_n in [0, 1, 2, 3, 4, 7, 12, 13, 14] {
            let n = 1 << lg_n;
            let input = values(&mut rng, n);
            let table = root_table(n);
            let expected = fft_with_options(PolynomialCoeffs::new(input.clone()), None, Some(&table)).values;
            for isa in supported() {
                let mut v = input.clone();
                fft_on(isa, &mut v, &table);
                assert_eq!(v, expected, "{} fft of 2^{lg_n}", isa.name());
            }
            let mut v = input.clone();
            ifft(&mut v, &table);
            let coeffs = ifft_with_options(PolynomialValues::new(input.clone()), None, Some(&table)).coeffs;
            assert_eq!(v, coeffs, "ifft of 2^{lg_n}");
            let shift = F::coset_shift();
            let mut v = input.clone();
            coset_fft(&mut v, &shift_powers(shift, n), &table);
            let values = PolynomialCoeffs::new(input).coset_fft_with_options(shift, None, Some(&table)).values;
            assert_eq!(v, values, "coset fft of 2^{lg_n}");
        }
    }

    /// The vector butterfly at the edges, against plonky2's field: `u` canonical (0, 1, p − 1,
    /// …), `v` and `ω` any representative, including products whose reduction lands at or
    /// above p (`(2^32 + 1)·(2^32 − 1) = 2^64 − 1`), which a subtraction must not see.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_lane_butterfly_is_plonky2s_at_the_edges() {
        #[cfg(test)]
        use crate::poseidon_x8::LANES;
        type Butterflies = unsafe fn(&[u64; LANES], &[u64; LANES], &[u64; LANES]) -> [[u64; LANES]; 2];
        let p = F::ORDER;
        let edges: Vec<u64> = vec![
            0,
            1,
            2,
            (1 << 32) - 1,
            1 << 32,
            (1 << 32) + 1,
            1 << 63,
            p - 2,
            p - 1,
            p,
            p + 1,
            u64::MAX - 1,
            u64::MAX,
        ];
        let mut rng = StdRng::seed_from_u64(24);
        for (isa, butterflies) in [(Isa::Avx512, avx512::butterflies as Butterflies), (Isa::Avx2, avx2::butterflies)] {
            if !isa.supported() {
                eprintln!("{} skipped: this CPU lacks it", isa.name());
                continue;
            }
            for &v in &edges {
                for k in 0..edges.len() {
                    let omega: [u64; LANES] = std::array::from_fn(|l| edges[(k + l) % edges.len()]);
                    let u: [u64; LANES] = std::array::from_fn(|l| match l {
                        0 => 0,
                        1 => p - 1,
                        2 => 1,
                        _ => rng.gen_range(0..p),
                    });
                    // SAFETY: the CPU has the instruction set (checked above).
                    let [sum, difference] = unsafe { butterflies(&u, &[v; LANES], &omega) };
                    for l in 0..LANES {
                        let t = F::from_noncanonical_u64(v) * F::from_noncanonical_u64(omega[l]);
                        let u0 = F::from_canonical_u64(u[l]);
                        assert!(sum[l] < p && difference[l] < p, "canonical");
                        assert_eq!(
                            F::from_canonical_u64(sum[l]),
                            u0 + t,
                            "{} {:#x} + {v:#x}·{:#x}",
                            isa.name(),
                            u[l],
                            omega[l]
                        );
                        assert_eq!(
                            F::from_canonical_u64(difference[l]),
                            u0 - t,
                            "{} {:#x} − {v:#x}·{:#x}",
                            isa.name(),
                            u[l],
                            omega[l]
                        );
                    }
                }
            }
        }
    }
}
