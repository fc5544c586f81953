//! Goldilocks arithmetic on vectors of 64-bit lanes, for the rayon backend's vector kernels
//! (the Poseidon permutation in [`crate::poseidon_x8`], the NTT in [`crate::ntt_x8`]): AVX-512
//! (eight lanes) or AVX2 (four).
//!
//! Each instruction set's module maps its intrinsics to one set of names (`wrap!`) and expands
//! `lane_field!` over them, so both run the same arithmetic, and each kernel expands its own
//! macro the same way over `use crate::lanes::<set>::*`. A product is four 32×32-bit lane
//! multiplications (`vpmuludq`) and plonky2's own reduction of the 128-bit result. On AVX-512 a
//! carry is a compare into a mask register and a masked add; AVX2 has neither, so its carries
//! are emulated and its products avoid them.
//!
//! [`isa`] is this CPU's best instruction set, detected once at run time; every kernel takes it.
//!
//! Values are plonky2's representatives, anywhere in `[0, 2^64)`, except where a function says
//! it wants or gives canonical ones.

use crate::F;

/// The instruction set the rayon backend's vector kernels run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Eight lanes per vector (AVX-512F).
    Avx512,
    /// Four lanes per vector (AVX2).
    Avx2,
    /// No vector kernels: plonky2's scalar code.
    Scalar,
}

impl Isa {
    /// Every instruction set, best first.
    pub const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Scalar];

    /// Short name for logs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Scalar => "scalar",
        }
    }

    /// Whether this CPU runs it (detected at run time).
    pub fn supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            Isa::Scalar => true,
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

/// The best instruction set of this CPU, detected once.
pub fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| Isa::ALL.into_iter().find(|isa| isa.supported()).unwrap_or(Isa::Scalar))
}

/// Lanes per vector on `isa`; `None` for the scalar fallback.
pub fn width(isa: Isa) -> Option<usize> {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Some(avx512::W),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Some(avx2::W),
        _ => None,
    }
}

/// The values' representatives, in place. `GoldilocksField` is `#[repr(transparent)]` over its
/// public `u64`.
pub(crate) fn words(values: &mut [F]) -> &mut [u64] {
    // SAFETY: F is repr(transparent) over u64, so the slice has the layout of `len` u64s; the
    // borrow of `values` is moved into the result.
    unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u64>(), values.len()) }
}

/// The same, read only.
pub(crate) fn words_of(values: &[F]) -> &[u64] {
    // SAFETY: as in `words`.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u64>(), values.len()) }
}

/// One instruction set's intrinsics under the names [`lane_field`] and the kernels use, each
/// compiled with that set's target feature: `name<const N: T>(args) -> type = body;`, the const
/// parameter optional.
macro_rules! wrap {
    ($feature:literal; $($(#[$doc:meta])* $name:ident $(<const $n:ident: $nt:ty>)? ($($arg:ident: $ty:ty),*) -> $ret:ty = $body:expr;)*) => {
        $(
            $(#[$doc])*
            #[target_feature(enable = $feature)]
            #[inline]
            pub(crate) fn $name$(<const $n: $nt>)?($($arg: $ty),*) -> $ret {
                $body
            }
        )*
    };
}

/// The field arithmetic on vectors of `W` lanes, over the primitives of the instruction set in
/// scope: `V` (a vector of u64 lanes), `M` (a lane mask), `W`, `splat`, `zero`, `add64`,
/// `sub64`, `and64`, `or64`, `mul32` (`vpmuludq`: the low 32 bits of each lane, multiplied to
/// 64), `hi32`, `shl`/`shr`, `lt` (unsigned, lane by lane), `flip` and `lt_flipped` (`lt` of
/// values kept with their sign bits flipped, where that makes it one signed compare),
/// `add_if`/`sub_if` (where the mask is set), `load`, `store`, and `CHEAP_CARRIES` (whether
/// carries by comparison beat avoiding them). [`avx512`] and [`avx2`] define those and expand this.
macro_rules! lane_field {
    ($feature:literal) => {
        /// 2^64 mod p = 2^32 − 1, for p = 2^64 − 2^32 + 1.
        pub(crate) const EPSILON: u64 = 0xFFFF_FFFF;

        /// The field's order, p = 2^64 − 2^32 + 1.
        pub(crate) const P: u64 = 0xFFFF_FFFF_0000_0001;

        /// `a + b` for `b < p`: on a carry, 2^64 ≡ ε is added back, and that cannot carry again
        /// (the wrapped sum is below `b`).
        #[target_feature(enable = $feature)]
        #[inline]
        pub(crate) fn add_canonical(a: V, b: V) -> V {
            let s = add64(a, b);
            let carry = lt(s, b);
            add_if(s, carry, splat(EPSILON))
        }

        /// plonky2's `reduce128` of `hi·2^64 + lo`: 2^96 ≡ −1 and 2^64 ≡ ε.
        #[target_feature(enable = $feature)]
        #[inline]
        pub(crate) fn reduce128(lo: V, hi: V) -> V {
            let hi_hi = shr::<32>(hi);
            // (hi mod 2^32)·ε: `vpmuludq` reads the low half of each lane.
            let t1 = mul32(hi, splat(EPSILON));
            if CHEAP_CARRIES {
                let borrow = lt(lo, hi_hi);
                let t0 = sub64(lo, hi_hi);
                let t0 = sub_if(t0, borrow, splat(EPSILON));
                let r = add64(t0, t1);
                let carry = lt(r, t1);
                add_if(r, carry, splat(EPSILON))
            } else {
                // The same steps on `lo` with its sign bit flipped, where an unsigned comparison
                // is `lt_flipped`, one compare: `lo` is flipped once and the result flipped
                // back, where `lt` twice flips four values. A flip adds 2^63, so it carries
                // through the wrapping additions and subtractions. The borrow is `lo < t0`, the
                // carry `r < t0`: each whether its step wrapped.
                let lo = flip(lo);
                let t0 = sub64(lo, hi_hi);
                let t0 = sub_if(t0, lt_flipped(lo, t0), splat(EPSILON));
                let r = add64(t0, t1);
                flip(add_if(r, lt_flipped(r, t0), splat(EPSILON)))
            }
        }

        /// The 128-bit product `a·b` as `(lo, hi)`, from four 32×32-bit products.
        #[target_feature(enable = $feature)]
        #[inline]
        pub(crate) fn mul_wide(a: V, b: V) -> (V, V) {
            let (a_hi, b_hi) = (hi32(a), hi32(b));
            let ll = mul32(a, b);
            let lh = mul32(a, b_hi);
            let hl = mul32(a_hi, b);
            let hh = mul32(a_hi, b_hi);
            if CHEAP_CARRIES {
                // The middle products' sum, and the carries out of it and of the low word.
                let mid = add64(lh, hl);
                let mid_carry = lt(mid, lh);
                let lo = add64(ll, shl::<32>(mid));
                let lo_carry = lt(lo, ll);
                let hi = add64(hh, shr::<32>(mid));
                let hi = add_if(hi, mid_carry, splat(1 << 32));
                (lo, add_if(hi, lo_carry, splat(1)))
            } else {
                // Schoolbook in 32-bit columns, each partial sum below 2^64 so that no carry
                // needs a comparison: (2^32 − 1)^2 + 2·(2^32 − 1) = 2^64 − 1.
                let mask = splat(0xFFFF_FFFF);
                let t0 = add64(hl, shr::<32>(ll));
                let t1 = add64(lh, and64(t0, mask));
                let hi = add64(add64(hh, shr::<32>(t0)), shr::<32>(t1));
                (or64(shl::<32>(t1), and64(ll, mask)), hi)
            }
        }

        /// `a·b`.
        #[target_feature(enable = $feature)]
        #[inline]
        pub(crate) fn mul(a: V, b: V) -> V {
            let (lo, hi) = mul_wide(a, b);
            reduce128(lo, hi)
        }

        /// x^7, plonky2's S-box.
        #[target_feature(enable = $feature)]
        #[inline]
        pub(crate) fn sbox(x: V) -> V {
            let x2 = square(x);
            let x3 = mul(x2, x);
            let x4 = square(x2);
            mul(x3, x4)
        }

        /// `a²`, as plonky2's AVX-512 field squares: a² = hh·2^64 + m·2^33 + ll with
        /// m = a_lo·a_hi, so the one middle product goes in shifted by 33, and no sum carries
        /// (m + (ll >> 33) < 2^64).
        #[target_feature(enable = $feature)]
        #[inline]
        pub(crate) fn square(a: V) -> V {
            let a_hi = hi32(a);
            let ll = mul32(a, a);
            let m = mul32(a, a_hi);
            let hh = mul32(a_hi, a_hi);
            let t0 = add64(m, shr::<33>(ll));
            let hi = add64(hh, shr::<31>(t0));
            let lo = add64(ll, shl::<33>(m));
            reduce128(lo, hi)
        }

        /// `x mod p`, canonical: `x − p` where `x ≥ p`.
        #[target_feature(enable = $feature)]
        #[inline]
        pub(crate) fn canonical(x: V) -> V {
            sub_if(x, lt(splat(P - 1), x), splat(P))
        }

        /// `a + b` for canonical `a` and `b`, canonical.
        #[target_feature(enable = $feature)]
        #[inline]
        pub(crate) fn add_mod(a: V, b: V) -> V {
            canonical(add_canonical(a, b))
        }

        /// `a − b` for canonical `a` and `b`, canonical: on a borrow the wrapped difference
        /// `a − b + 2^64` is at least ε + 2, and taking ε off leaves `a − b + p`, in `[1, p)`.
        #[target_feature(enable = $feature)]
        #[inline]
        pub(crate) fn sub_mod(a: V, b: V) -> V {
            let d = sub64(a, b);
            sub_if(d, lt(a, b), splat(EPSILON))
        }
    };
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    //! The arithmetic on `__m512i`, eight lanes, the carries in mask registers. Every function
    //! needs AVX-512F.

    use std::arch::x86_64::*;

    pub(crate) type V = __m512i;
    pub(crate) type M = __mmask8;
    pub(crate) const W: usize = 8;
    /// A carry is one compare into a mask register and one masked add.
    pub(crate) const CHEAP_CARRIES: bool = true;

    wrap! { "avx512f";
        splat(x: u64) -> V = _mm512_set1_epi64(x as i64);
        zero() -> V = _mm512_setzero_si512();
        add64(a: V, b: V) -> V = _mm512_add_epi64(a, b);
        sub64(a: V, b: V) -> V = _mm512_sub_epi64(a, b);
        and64(a: V, b: V) -> V = _mm512_and_si512(a, b);
        or64(a: V, b: V) -> V = _mm512_or_si512(a, b);
        mul32(a: V, b: V) -> V = _mm512_mul_epu32(a, b);
        lt(a: V, b: V) -> M = _mm512_cmplt_epu64_mask(a, b);
        /// Unsigned comparisons need no flipped sign bits here (`CHEAP_CARRIES`): `a` itself.
        flip(a: V) -> V = a;
        /// `lt`.
        lt_flipped(a: V, b: V) -> M = lt(a, b);
        add_if(x: V, m: M, c: V) -> V = _mm512_mask_add_epi64(x, m, x, c);
        sub_if(x: V, m: M, c: V) -> V = _mm512_mask_sub_epi64(x, m, x, c);
        shl<const N: u32>(a: V) -> V = _mm512_slli_epi64::<N>(a);
        shr<const N: u32>(a: V) -> V = _mm512_srli_epi64::<N>(a);
        /// Each lane's high 32 bits copied into its low half (for `mul32`, which reads only that),
        /// by a shuffle rather than a shift.
        hi32(a: V) -> V = _mm512_castps_si512(_mm512_movehdup_ps(_mm512_castsi512_ps(a)));
        /// The first `W` elements of `x` (a shorter slice panics).
        load(x: &[u64]) -> V = {
            let x = &x[..W];
            // SAFETY: `x` holds the W u64 (64 bytes) of one unaligned load.
            unsafe { _mm512_loadu_si512(x.as_ptr().cast()) }
        };
        store(x: &mut [u64], v: V) -> () = {
            let x = &mut x[..W];
            // SAFETY: as in `load`, for the store.
            unsafe { _mm512_storeu_si512(x.as_mut_ptr().cast(), v) }
        };
    }

    lane_field!("avx512f");
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    //! The arithmetic on `__m256i`, four lanes. AVX2 has no
    //! unsigned 64-bit comparison and no masked add: `lt` compares with the sign bits flipped,
    //! and a mask is a lane of ones that selects the addend with an AND. Every function needs
    //! AVX2.

    use std::arch::x86_64::*;

    pub(crate) type V = __m256i;
    pub(crate) type M = __m256i;
    pub(crate) const W: usize = 4;
    /// A carry is two XORs, a compare, an AND and an add: `mul_wide` avoids them.
    pub(crate) const CHEAP_CARRIES: bool = false;

    wrap! { "avx2";
        splat(x: u64) -> V = _mm256_set1_epi64x(x as i64);
        zero() -> V = _mm256_setzero_si256();
        add64(a: V, b: V) -> V = _mm256_add_epi64(a, b);
        sub64(a: V, b: V) -> V = _mm256_sub_epi64(a, b);
        and64(a: V, b: V) -> V = _mm256_and_si256(a, b);
        or64(a: V, b: V) -> V = _mm256_or_si256(a, b);
        mul32(a: V, b: V) -> V = _mm256_mul_epu32(a, b);
        add_if(x: V, m: M, c: V) -> V = _mm256_add_epi64(x, _mm256_and_si256(m, c));
        sub_if(x: V, m: M, c: V) -> V = _mm256_sub_epi64(x, _mm256_and_si256(m, c));
        shl<const N: i32>(a: V) -> V = _mm256_slli_epi64::<N>(a);
        shr<const N: i32>(a: V) -> V = _mm256_srli_epi64::<N>(a);
        /// Each lane's high 32 bits copied into its low half (for `mul32`, which reads only that),
        /// by a shuffle rather than a shift.
        hi32(a: V) -> V = _mm256_castps_si256(_mm256_movehdup_ps(_mm256_castsi256_ps(a)));
        /// `a < b` unsigned: signed `b' > a'` with both sign bits flipped.
        lt(a: V, b: V) -> M = _mm256_cmpgt_epi64(flip(b), flip(a));
        /// `a` with its sign bit flipped (`x + 2^63`, wrapping), where `lt_flipped` compares.
        flip(a: V) -> V = _mm256_xor_si256(a, splat(1 << 63));
        /// `a < b` unsigned for `flip(a)` and `flip(b)`: one signed compare.
        lt_flipped(a: V, b: V) -> M = _mm256_cmpgt_epi64(b, a);
        /// The first `W` elements of `x` (a shorter slice panics).
        load(x: &[u64]) -> V = {
            let x = &x[..W];
            // SAFETY: `x` holds the W u64 (32 bytes) of one unaligned load.
            unsafe { _mm256_loadu_si256(x.as_ptr().cast()) }
        };
        store(x: &mut [u64], v: V) -> () = {
            let x = &mut x[..W];
            // SAFETY: as in `load`, for the store.
            unsafe { _mm256_storeu_si256(x.as_mut_ptr().cast(), v) }
        };
    }

    lane_field!("avx2");
}
