// plonky2's Poseidon permutation over Goldilocks (width 12, 8 full and 22 partial rounds, x^7),
// as plonky2's `poseidon` runs it: full rounds with the MDS layer (circulant plus diagonal), and
// the partial rounds in the fast form (a sparse matrix per round). The round constants and
// matrices are prepended from plonky2's own tables by the Rust side (`poseidon_prelude`,
// `poseidon_fast_prelude`), so there is one source of truth.
#pragma once
#include "goldilocks.cuh"

#define PSN_WIDTH 12
#define PSN_HALF_FULL 4
#define PSN_PARTIAL 22

// Provided by the preludes: PSN_RC[360], PSN_MDS_CIRC[12], PSN_MDS_DIAG[12], PSN_MDS_0_0, and
// the fast partial rounds' PSN_FAST_FIRST_RC[12], PSN_FAST_INIT[11·11], PSN_FAST_RC[22],
// PSN_FAST_VS[22·11] and PSN_FAST_W_HATS[22·11].

// The MDS layer, each row as plonky2's `mds_row_shf`, on 32-bit halves: each lane splits into
// (hi, lo), and the small matrix entries (their sum is below 2^9: `MDS_SUM` in cuda/mod.rs)
// multiply each half into a 64-bit sum that cannot overflow (< 2^41). A 32×32→64 multiply-add is
// one instruction on the device, where a 64×64→128 product with carries is about a dozen.
GL_FN void psn_mds(u64 *s) {
    u32 lo[PSN_WIDTH], hi[PSN_WIDTH];
    GL_UNROLL
    for (int i = 0; i < PSN_WIDTH; i++) {
        lo[i] = (u32)s[i];
        hi[i] = (u32)(s[i] >> 32);
    }
    GL_UNROLL
    for (int r = 0; r < PSN_WIDTH; r++) {
        u64 sum_lo = (u64)lo[r] * PSN_MDS_DIAG[r], sum_hi = (u64)hi[r] * PSN_MDS_DIAG[r];
        GL_UNROLL
        for (int i = 0; i < PSN_WIDTH; i++) {
            sum_lo += (u64)lo[(i + r) % PSN_WIDTH] * PSN_MDS_CIRC[i];
            sum_hi += (u64)hi[(i + r) % PSN_WIDTH] * PSN_MDS_CIRC[i];
        }
        // sum_lo + sum_hi·2^32 < 2^74: its high word is below 2^10.
        u64 low = sum_lo + (sum_hi << 32);
        s[r] = gl_reduce_small(low, (sum_hi >> 32) + (low < sum_lo));
    }
}

// plonky2's `partial_first_constant_layer` then `mds_partial_layer_init`: the first partial
// round's constants, and the dense initial matrix (first row and column [1, 0, …, 0]).
GL_FN void psn_partial_init(u64 *s) {
    GL_UNROLL
    for (int i = 0; i < PSN_WIDTH; i++) s[i] = gl_add(s[i], PSN_FAST_FIRST_RC[i]);
    u64 out[PSN_WIDTH];
    GL_UNROLL
    for (int c = 1; c < PSN_WIDTH; c++) {
        Gl160 acc = {0, 0, 0};
        GL_UNROLL
        for (int r = 1; r < PSN_WIDTH; r++) gl_mac160(&acc, s[r], PSN_FAST_INIT[(r - 1) * (PSN_WIDTH - 1) + c - 1]);
        out[c] = gl_reduce160(acc);
    }
    GL_UNROLL
    for (int c = 1; c < PSN_WIDTH; c++) s[c] = out[c];
}

// plonky2's `mds_partial_layer_fast` for partial round `r`: lane 0 becomes [M₀₀ | ŵ]·state, each
// other lane gains state[0]·v.
GL_FN void psn_partial_matrix(u64 *s, int r) {
    Gl160 acc = {0, 0, 0};
    gl_mac160(&acc, s[0], PSN_MDS_0_0);
    GL_UNROLL
    for (int i = 1; i < PSN_WIDTH; i++) gl_mac160(&acc, s[i], PSN_FAST_W_HATS[r * (PSN_WIDTH - 1) + i - 1]);
    GL_UNROLL
    for (int i = 1; i < PSN_WIDTH; i++) s[i] = gl_mul_add(s[0], PSN_FAST_VS[r * (PSN_WIDTH - 1) + i - 1], s[i]);
    s[0] = gl_reduce160(acc);
}

GL_FN void psn_full_round(u64 *s, int round) {
    GL_UNROLL
    for (int i = 0; i < PSN_WIDTH; i++) s[i] = gl_pow7(gl_add(s[i], PSN_RC[round * PSN_WIDTH + i]));
    psn_mds(s);
}

GL_FN void psn_permute(u64 *s) {
    for (int f = 0; f < PSN_HALF_FULL; f++) psn_full_round(s, f);
    psn_partial_init(s);
    for (int p = 0; p < PSN_PARTIAL; p++) {
        s[0] = gl_add(gl_pow7(s[0]), PSN_FAST_RC[p]);
        psn_partial_matrix(s, p);
    }
    for (int f = 0; f < PSN_HALF_FULL; f++) psn_full_round(s, PSN_HALF_FULL + PSN_PARTIAL + f);
}

// plonky2's hash_or_noop of `len` elements: up to 4 are the digest themselves (zero padded);
// more are absorbed 8 at a time in overwrite mode and the first 4 lanes squeezed.
GL_FN void psn_hash_or_noop(const u64 *in, u32 len, u32 stride, u64 *out) {
    if (len <= 4) {
        for (u32 i = 0; i < 4; i++) out[i] = i < len ? in[(u64)i * stride] : 0;
        return;
    }
    u64 s[PSN_WIDTH];
    for (int i = 0; i < PSN_WIDTH; i++) s[i] = 0;
    for (u32 start = 0; start < len; start += 8) {
        for (u32 i = 0; i < 8 && start + i < len; i++) s[i] = in[(u64)(start + i) * stride];
        psn_permute(s);
    }
    for (int i = 0; i < 4; i++) out[i] = s[i];
}

// plonky2's two_to_one: permute [left, right, 0, 0, 0, 0] and take the first four lanes.
GL_FN void psn_two_to_one(const u64 *left, const u64 *right, u64 *out) {
    u64 s[PSN_WIDTH];
    for (int i = 0; i < 4; i++) {
        s[i] = left[i];
        s[4 + i] = right[i];
        s[8 + i] = 0;
    }
    psn_permute(s);
    for (int i = 0; i < 4; i++) out[i] = s[i];
}
