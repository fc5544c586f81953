// Goldilocks arithmetic, p = 2^64 - 2^32 + 1, for NVRTC (device) and a host C compiler alike:
// every function returns canonical values (< p) given canonical inputs. The host build is tested
// against plonky2 on every machine (prover-gpu/tests/host_arith.rs).
#pragma once

#ifdef __CUDACC_RTC__
typedef unsigned long long u64;
typedef unsigned int u32;
#define GL_FN __device__ __forceinline__
#else
#include <stdint.h>
typedef uint64_t u64;
typedef uint32_t u32;
#define GL_FN static inline
#endif

// Full unrolling of the fixed-count loops: NVRTC's pragma where it compiles for a device, and
// each host compiler's own spelling (GCC warns on the bare one) where the emulation and the host
// tests build the same source. The emulation's Poseidon, most of its work, is 1.3x faster for it:
// the MDS layer's rotated indices become constants (docs/build.md).
#if defined(__CUDA_ARCH__) || defined(__clang__)
#define GL_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define GL_UNROLL _Pragma("GCC unroll 64")
#else
#define GL_UNROLL
#endif

#define GL_P 0xffffffff00000001ULL
#define GL_EPSILON 0xffffffffULL

GL_FN u64 gl_add(u64 a, u64 b) {
    u64 s = a + b;
    // Overflow past 2^64 wraps by 2^64 = EPSILON (mod p); then one subtraction of p at most.
    if (s < a) s += GL_EPSILON;
    if (s >= GL_P) s -= GL_P;
    return s;
}

GL_FN u64 gl_sub(u64 a, u64 b) {
    return a >= b ? a - b : a + (GL_P - b);
}

GL_FN u64 gl_neg(u64 a) {
    return a == 0 ? 0 : GL_P - a;
}

// hi·2^64 + lo reduced below 2^64 but not always below p (plonky2's `reduce128`, for any 128-bit
// value): 2^64 = 2^32 - 1 and 2^96 = -1 (mod p). gl_reduce128 then canonicalizes; only
// gl_mul_partial uses it as it is.
GL_FN u64 gl_reduce128_partial(u64 lo, u64 hi) {
    u64 hi_hi = hi >> 32;
    u64 hi_lo = hi & GL_EPSILON;
    u64 t0 = lo - hi_hi;
    if (lo < hi_hi) t0 -= GL_EPSILON;
    u64 t1 = hi_lo * GL_EPSILON;
    u64 t2 = t0 + t1;
    if (t2 < t0) t2 += GL_EPSILON;
    return t2;
}

// Reduces hi·2^64 + lo to its canonical value.
GL_FN u64 gl_reduce128(u64 lo, u64 hi) {
    u64 t = gl_reduce128_partial(lo, hi);
    return t >= GL_P ? t - GL_P : t;
}

// Reduces hi·2^64 + lo for hi < 2^32: hi·(2^32 - 1) < 2^64, so one wrap at most.
GL_FN u64 gl_reduce_small(u64 lo, u64 hi) {
    u64 t = lo + hi * GL_EPSILON;
    if (t < lo) t += GL_EPSILON;
    if (t >= GL_P) t -= GL_P;
    return t;
}

// The 128-bit product a·b as (lo, hi).
GL_FN void gl_mul_wide(u64 a, u64 b, u64 *lo, u64 *hi) {
#ifdef __CUDACC_RTC__
    *lo = a * b;
    *hi = __umul64hi(a, b);
#else
    unsigned __int128 m = (unsigned __int128)a * b;
    *lo = (u64)m;
    *hi = (u64)(m >> 64);
#endif
}

GL_FN u64 gl_mul(u64 a, u64 b) {
    u64 lo, hi;
    gl_mul_wide(a, b, &lo, &hi);
    return gl_reduce128(lo, hi);
}

// a·b + c with one reduction (the product's high word is at most 2^64 - 2, so the carry fits).
GL_FN u64 gl_mul_add(u64 a, u64 b, u64 c) {
    u64 lo, hi;
    gl_mul_wide(a, b, &lo, &hi);
    lo += c;
    hi += lo < c;
    return gl_reduce128(lo, hi);
}

// a·b for any a, b below 2^64, reduced below 2^64 but not always canonical: for products that
// only feed other products (the S-box's), which take any 64-bit input.
GL_FN u64 gl_mul_partial(u64 a, u64 b) {
    u64 lo, hi;
    gl_mul_wide(a, b, &lo, &hi);
    return gl_reduce128_partial(lo, hi);
}

// x^7, canonical; the intermediate powers skip canonicalization (they only feed products).
GL_FN u64 gl_pow7(u64 x) {
    u64 x2 = gl_mul_partial(x, x);
    u64 x4 = gl_mul_partial(x2, x2);
    u64 x3 = gl_mul_partial(x2, x);
    return gl_mul(x3, x4);
}

// A sum of 128-bit products in 160 bits (plonky2's `add_u160_u128`), reduced once: fewer than
// 2^32 products.
typedef struct {
    u64 lo, hi;
    u32 top;
} Gl160;

GL_FN void gl_mac160(Gl160 *acc, u64 a, u64 b) {
    u64 lo, hi;
    gl_mul_wide(a, b, &lo, &hi);
    acc->lo += lo;
    // hi is at most 2^64 - 2, so hi plus the carry does not wrap.
    hi += acc->lo < lo;
    acc->hi += hi;
    acc->top += acc->hi < hi;
}

// plonky2's `reduce_u160`: the high 96 bits to 64 (2^64 = 2^32 - 1 mod p), then 128 to 64.
GL_FN u64 gl_reduce160(Gl160 acc) {
    return gl_reduce128(acc.lo, gl_reduce_small(acc.hi, acc.top));
}
