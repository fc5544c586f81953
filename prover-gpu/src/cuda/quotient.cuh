// plonky2's vanishing terms at one point of the quotient coset (`eval_vanishing_poly_base_batch`
// and the division by Z_H), for the gates our circuits use. The Rust side packs the inputs
// (`quotient::QuotientKernelArgs`); the same function runs in the CUDA kernel and, compiled by the
// host C compiler, in the tests against plonky2's own gates.
//
// Terms are folded into the α-combinations as they are made (out_c = Σ_t α_c^t · term_t, the
// powers precomputed), so no term array is kept: the order of terms is plonky2's, L₀ terms, then
// partial-product checks, then gate constraints, each gate's constraints times its selector filter.
#pragma once
#include "goldilocks.cuh"
#include "poseidon.cuh"

// Words of the shape array (quotient::SHAPE_LEN), words per gate (quotient::GATE_WORDS).
#define QT_WIRES 0
#define QT_CONSTANTS 1
#define QT_SELECTORS 2
#define QT_ROUTED 3
#define QT_CHALLENGES 4
#define QT_PRODS 5
#define QT_CHUNK 6
#define QT_GATES 7
#define QT_TERMS 8
#define QT_CS_WIDTH 9
#define QT_ZS_WIDTH 10
#define QT_LDE_BITS 11
#define QT_STEP_BITS 12
#define QT_QUOTIENT_BITS 13
#define QT_GATE_WORDS 10
#define QT_MAX_CHALLENGES 4
// plonky2's UNUSED_SELECTOR (u32::MAX).
#define QT_UNUSED_SELECTOR 0xffffffffULL

// The larger functions are left to the compiler to inline or not.
#ifdef __CUDACC_RTC__
#define QT_FN __device__
#else
#define QT_FN static
#endif

enum {
    QT_NOOP = 0,
    QT_CONSTANT = 1,
    QT_PUBLIC_INPUT = 2,
    QT_ARITHMETIC = 3,
    QT_BASE_SUM_2 = 4,
    QT_POSEIDON = 5,
    QT_ARITHMETIC_EXT = 6,
    QT_MUL_EXT = 7,
    QT_REDUCING = 8,
    QT_REDUCING_EXT = 9,
    QT_POSEIDON_MDS = 10,
    QT_RANDOM_ACCESS = 11,
    QT_COSET_INTERPOLATION = 12,
    QT_RANGE_CHECK = 13,
    QT_EXPONENTIATION = 14,
};
// quotient::MAX_RANDOM_ACCESS_BITS
#define QT_MAX_RANDOM_ACCESS 64

// The quadratic extension F[u]/(u² − 7), plonky2's for Goldilocks: a + b·u.
typedef struct {
    u64 a, b;
} Ext;
#define EXT_W 7ULL

GL_FN Ext ext_at(const u64 *w, u32 k) {
    Ext e = {w[k], w[k + 1]};
    return e;
}
GL_FN Ext ext_add(Ext x, Ext y) {
    Ext e = {gl_add(x.a, y.a), gl_add(x.b, y.b)};
    return e;
}
GL_FN Ext ext_sub(Ext x, Ext y) {
    Ext e = {gl_sub(x.a, y.a), gl_sub(x.b, y.b)};
    return e;
}
GL_FN Ext ext_scale(Ext x, u64 c) {
    Ext e = {gl_mul(x.a, c), gl_mul(x.b, c)};
    return e;
}
GL_FN Ext ext_mul(Ext x, Ext y) {
    Ext e = {gl_add(gl_mul(x.a, y.a), gl_mul(EXT_W, gl_mul(x.b, y.b))), gl_add(gl_mul(x.a, y.b), gl_mul(x.b, y.a))};
    return e;
}

typedef struct {
    u64 acc[QT_MAX_CHALLENGES];
    const u64 *alpha_pows; // challenges × terms
    u32 challenges, terms;
    // Added to every gate constraint's index, and multiplied into its value.
    u32 base;
    u64 filter;
} QtSum;

GL_FN void qt_emit(QtSum *s, u32 t, u64 v) {
    for (u32 c = 0; c < s->challenges; c++) s->acc[c] = gl_add(s->acc[c], gl_mul(s->alpha_pows[c * s->terms + t], v));
}

// Gate constraint m of the current gate.
GL_FN void qt_constraint(QtSum *s, u32 m, u64 v) {
    qt_emit(s, s->base + m, gl_mul(s->filter, v));
}

// PoseidonGate's wires (plonky2 gates/poseidon.rs).
#define PG_SWAP 24
#define PG_DELTA 25
#define PG_FULL_0 29
#define PG_PARTIAL (PG_FULL_0 + PSN_WIDTH * (PSN_HALF_FULL - 1))
#define PG_FULL_1 (PG_PARTIAL + PSN_PARTIAL)

QT_FN void qt_poseidon(QtSum *s, const u64 *w) {
    u32 m = 0;
    u64 swap = w[PG_SWAP];
    qt_constraint(s, m++, gl_mul(swap, gl_sub(swap, 1)));
    for (int i = 0; i < 4; i++) {
        qt_constraint(s, m++, gl_sub(gl_mul(swap, gl_sub(w[i + 4], w[i])), w[PG_DELTA + i]));
    }
    u64 st[PSN_WIDTH];
    for (int i = 0; i < 4; i++) {
        st[i] = gl_add(w[i], w[PG_DELTA + i]);
        st[i + 4] = gl_sub(w[i + 4], w[PG_DELTA + i]);
    }
    for (int i = 8; i < PSN_WIDTH; i++) st[i] = w[i];
    int round = 0;
    for (int r = 0; r < PSN_HALF_FULL; r++, round++) {
        for (int i = 0; i < PSN_WIDTH; i++) st[i] = gl_add(st[i], PSN_RC[round * PSN_WIDTH + i]);
        if (r != 0) {
            for (int i = 0; i < PSN_WIDTH; i++) {
                u64 sbox_in = w[PG_FULL_0 + PSN_WIDTH * (r - 1) + i];
                qt_constraint(s, m++, gl_sub(st[i], sbox_in));
                st[i] = sbox_in;
            }
        }
        for (int i = 0; i < PSN_WIDTH; i++) st[i] = gl_pow7(st[i]);
        psn_mds(st);
    }
    // Partial rounds in plonky2's fast form, as the permutation runs them (poseidon.cuh).
    psn_partial_init(st);
    for (int r = 0; r < PSN_PARTIAL; r++) {
        u64 sbox_in = w[PG_PARTIAL + r];
        qt_constraint(s, m++, gl_sub(st[0], sbox_in));
        st[0] = gl_pow7(sbox_in);
        if (r < PSN_PARTIAL - 1) st[0] = gl_add(st[0], PSN_FAST_RC[r]);
        psn_partial_matrix(st, r);
    }
    round += PSN_PARTIAL;
    for (int r = 0; r < PSN_HALF_FULL; r++, round++) {
        for (int i = 0; i < PSN_WIDTH; i++) {
            st[i] = gl_add(st[i], PSN_RC[round * PSN_WIDTH + i]);
            u64 sbox_in = w[PG_FULL_1 + PSN_WIDTH * r + i];
            qt_constraint(s, m++, gl_sub(st[i], sbox_in));
            st[i] = gl_pow7(sbox_in);
        }
        psn_mds(st);
    }
    for (int i = 0; i < PSN_WIDTH; i++) qt_constraint(s, m++, gl_sub(st[i], w[PSN_WIDTH + i]));
}

// An extension constraint: its two components, as plonky2's `to_basefield_array`.
GL_FN void qt_constraint_ext(QtSum *s, u32 m, Ext v) {
    qt_constraint(s, m, v.a);
    qt_constraint(s, m + 1, v.b);
}

// plonky2's partial_interpolate over points [from, to) of a coset interpolation.
GL_FN void qt_partial_interpolate(const u64 *domain, const u64 *weights, const u64 *w, u32 from, u32 to, Ext x,
                                  Ext *eval, Ext *prod) {
    for (u32 k = from; k < to; k++) {
        Ext val = ext_scale(ext_at(w, 1 + 2 * k), weights[k]);
        Ext term = {gl_sub(x.a, domain[k]), x.b};
        *eval = ext_add(ext_mul(*eval, term), ext_mul(val, *prod));
        *prod = ext_mul(*prod, term);
    }
}

QT_FN void qt_coset_interpolation(QtSum *s, u32 bits, u32 degree, const u64 *data, const u64 *w) {
    u32 points = 1u << bits;
    const u64 *domain = data, *weights = data + points;
    u32 start_int = 5 + 2 * points, ni = (points - 2) / (degree - 1);
    Ext point = ext_at(w, 1 + 2 * points), value = ext_at(w, 3 + 2 * points);
    Ext shifted = ext_at(w, start_int + 4 * ni);
    u32 m = 0;
    qt_constraint_ext(s, m, ext_sub(point, ext_scale(shifted, w[0])));
    m += 2;
    Ext eval = {0, 0}, prod = {1, 0};
    qt_partial_interpolate(domain, weights, w, 0, degree, shifted, &eval, &prod);
    for (u32 i = 0; i < ni; i++) {
        Ext ie = ext_at(w, start_int + 2 * i), ip = ext_at(w, start_int + 2 * (ni + i));
        qt_constraint_ext(s, m, ext_sub(ie, eval));
        qt_constraint_ext(s, m + 2, ext_sub(ip, prod));
        m += 4;
        u32 from = 1 + (degree - 1) * (i + 1), to = from + degree - 1;
        if (to > points) to = points;
        eval = ie;
        prod = ip;
        qt_partial_interpolate(domain, weights, w, from, to, shifted, &eval, &prod);
    }
    qt_constraint_ext(s, m, ext_sub(value, eval));
}

QT_FN void qt_random_access(QtSum *s, u32 bits, u32 copies, u32 extra, const u64 *c, const u64 *w) {
    u32 vec = 1u << bits, routed = (2 + vec) * copies + extra, m = 0;
    for (u32 copy = 0; copy < copies; copy++) {
        const u64 *base = w + (2 + vec) * copy;
        const u64 *bit = w + routed + copy * bits;
        for (u32 i = 0; i < bits; i++) qt_constraint(s, m++, gl_mul(bit[i], gl_sub(bit[i], 1)));
        u64 index = 0;
        for (u32 i = bits; i > 0; i--) index = gl_add(gl_add(index, index), bit[i - 1]);
        qt_constraint(s, m++, gl_sub(index, base[0]));
        // Fold the list in halves, each pair (x, y) to x + b·(y − x).
        u64 list[QT_MAX_RANDOM_ACCESS];
        for (u32 i = 0; i < vec; i++) list[i] = base[2 + i];
        for (u32 i = 0, len = vec; i < bits; i++, len /= 2)
            for (u32 k = 0; k < len / 2; k++)
                list[k] = gl_add(list[2 * k], gl_mul(bit[i], gl_sub(list[2 * k + 1], list[2 * k])));
        qt_constraint(s, m++, gl_sub(list[0], base[1]));
    }
    for (u32 i = 0; i < extra; i++) qt_constraint(s, m++, gl_sub(c[i], w[(2 + vec) * copies + i]));
}

// One gate's constraints: `c` the gate's constants (after the selectors), `w` the wires, `op`
// its descriptor, `data` the gates' data.
QT_FN void qt_gate(QtSum *s, const u32 *op, const u64 *c, const u64 *w, const u64 *pi_hash, const u64 *data) {
    u32 kind = op[0], param = op[1];
    switch (kind) {
    case QT_CONSTANT:
        for (u32 i = 0; i < param; i++) qt_constraint(s, i, gl_sub(c[i], w[i]));
        break;
    case QT_PUBLIC_INPUT:
        for (u32 i = 0; i < 4; i++) qt_constraint(s, i, gl_sub(w[i], pi_hash[i]));
        break;
    case QT_ARITHMETIC:
        for (u32 i = 0; i < param; i++) {
            u64 computed = gl_add(gl_mul(gl_mul(w[4 * i], w[4 * i + 1]), c[0]), gl_mul(w[4 * i + 2], c[1]));
            qt_constraint(s, i, gl_sub(w[4 * i + 3], computed));
        }
        break;
    case QT_BASE_SUM_2: {
        // Σ limb_i·2^i − sum, then limb·(limb − 1) for each limb.
        u64 sum = 0;
        for (u32 i = param; i > 0; i--) sum = gl_add(gl_add(sum, sum), w[i]);
        qt_constraint(s, 0, gl_sub(sum, w[0]));
        for (u32 i = 0; i < param; i++) qt_constraint(s, 1 + i, gl_mul(w[1 + i], gl_sub(w[1 + i], 1)));
        break;
    }
    case QT_RANGE_CHECK: {
        // gates::RangeCheckGate: per value, Σ limb_j·4^j − value, then x(x − 1)(x − 2)(x − 3) =
        // y(y + 2) with y = x(x − 3) for each limb, x(x − 1) for a last limb that is a bit.
        u32 ops = op[2], limbs = (param + 1) / 2;
        for (u32 v = 0; v < ops; v++) {
            const u64 *l = w + ops + v * limbs;
            u32 at = v * (1 + limbs);
            u64 sum = 0;
            for (u32 j = limbs; j > 0; j--) {
                u64 twice = gl_add(sum, sum);
                sum = gl_add(gl_add(twice, twice), l[j - 1]);
            }
            qt_constraint(s, at, gl_sub(sum, w[v]));
            for (u32 j = 0; j < limbs; j++) {
                u64 x = l[j], c;
                if ((param & 1) && j + 1 == limbs) {
                    c = gl_mul(x, gl_sub(x, 1));
                } else {
                    u64 y = gl_mul(x, gl_sub(x, 3));
                    c = gl_mul(y, gl_add(y, 2));
                }
                qt_constraint(s, at + 1 + j, c);
            }
        }
        break;
    }
    case QT_EXPONENTIATION: {
        // plonky2's ExponentiationGate. Wires: the base, the exponent's `param` bits (least
        // significant first), the output, the running powers. prev·(bit·base + 1 − bit) − power_i
        // over the bits from the most significant, prev being 1 and then power_{i−1}²; then
        // output − the last power.
        u64 prev = 1;
        for (u32 i = 0; i < param; i++) {
            u64 bit = w[param - i], power = w[param + 2 + i];
            qt_constraint(s, i, gl_sub(gl_mul(prev, gl_add(gl_mul(bit, w[0]), gl_sub(1, bit))), power));
            prev = gl_mul(power, power);
        }
        qt_constraint(s, param, gl_sub(w[param + 1], w[2 * param + 1]));
        break;
    }
    case QT_POSEIDON:
        qt_poseidon(s, w);
        break;
    case QT_ARITHMETIC_EXT:
        for (u32 i = 0; i < param; i++) {
            Ext prod = ext_mul(ext_at(w, 8 * i), ext_at(w, 8 * i + 2));
            Ext computed = ext_add(ext_scale(prod, c[0]), ext_scale(ext_at(w, 8 * i + 4), c[1]));
            qt_constraint_ext(s, 2 * i, ext_sub(ext_at(w, 8 * i + 6), computed));
        }
        break;
    case QT_MUL_EXT:
        for (u32 i = 0; i < param; i++) {
            Ext computed = ext_scale(ext_mul(ext_at(w, 6 * i), ext_at(w, 6 * i + 2)), c[0]);
            qt_constraint_ext(s, 2 * i, ext_sub(ext_at(w, 6 * i + 4), computed));
        }
        break;
    case QT_REDUCING:
    case QT_REDUCING_EXT: {
        // acc·α + coeff − acc_next over the coefficients; the last accumulator is the output.
        int ext = kind == QT_REDUCING_EXT;
        Ext alpha = ext_at(w, 2), acc = ext_at(w, 4);
        u32 accs = 6 + (ext ? 2 : 1) * param;
        for (u32 i = 0; i < param; i++) {
            Ext coeff = {w[6 + i], 0};
            if (ext) coeff = ext_at(w, 6 + 2 * i);
            Ext next = i + 1 == param ? ext_at(w, 0) : ext_at(w, accs + 2 * i);
            qt_constraint_ext(s, 2 * i, ext_sub(ext_add(ext_mul(acc, alpha), coeff), next));
            acc = next;
        }
        break;
    }
    case QT_POSEIDON_MDS: {
        u64 a[PSN_WIDTH], b[PSN_WIDTH];
        for (int i = 0; i < PSN_WIDTH; i++) {
            a[i] = w[2 * i];
            b[i] = w[2 * i + 1];
        }
        psn_mds(a);
        psn_mds(b);
        for (int i = 0; i < PSN_WIDTH; i++) {
            Ext computed = {a[i], b[i]};
            qt_constraint_ext(s, 2 * i, ext_sub(ext_at(w, 2 * (PSN_WIDTH + i)), computed));
        }
        break;
    }
    case QT_RANDOM_ACCESS:
        qt_random_access(s, param, op[2], op[3], c, w);
        break;
    case QT_COSET_INTERPOLATION:
        qt_coset_interpolation(s, param, op[2], data + op[9], w);
        break;
    default:
        break;
    }
}

// The vanishing combination of every challenge at point `i` of the quotient coset, divided by
// Z_H, written to out[c·size + i]. Arrays as in quotient::QuotientKernelArgs.
QT_FN void qt_value_at(u64 i, const u32 *shape, const u32 *gates, const u64 *params, const u64 *cs_rows,
                       const u64 *wire_rows, const u64 *zs_rows, const u64 *xs, const u64 *l0s, const u64 *zh_inv,
                       u64 *out) {
    u32 routed = shape[QT_ROUTED], challenges = shape[QT_CHALLENGES], prods = shape[QT_PRODS];
    u32 chunk = shape[QT_CHUNK], terms = shape[QT_TERMS], lde_bits = shape[QT_LDE_BITS];
    u32 step_bits = shape[QT_STEP_BITS], qbits = shape[QT_QUOTIENT_BITS];
    u64 size = 1ULL << (lde_bits - step_bits);
    // get_lde_values(i, step): leaf reverse_bits(i·step).
    u64 mask = (1ULL << lde_bits) - 1;
    u64 row = 0, next_row = 0, j = (i << step_bits) & mask, jn = (((i + (1ULL << qbits)) % size) << step_bits) & mask;
    for (u32 b = 0; b < lde_bits; b++) {
        row = (row << 1) | ((j >> b) & 1);
        next_row = (next_row << 1) | ((jn >> b) & 1);
    }
    const u64 *cs = cs_rows + row * shape[QT_CS_WIDTH];
    const u64 *sigmas = cs + shape[QT_CONSTANTS];
    const u64 *w = wire_rows + row * shape[QT_WIRES];
    const u64 *z = zs_rows + row * shape[QT_ZS_WIDTH];
    const u64 *zn = zs_rows + next_row * shape[QT_ZS_WIDTH];
    const u64 *beta_k = params;
    const u64 *betas = beta_k + challenges * routed;
    const u64 *gammas = betas + challenges;
    const u64 *pi_hash = gammas + challenges;
    u64 x = xs[i], l0 = l0s[i];

    QtSum s;
    for (u32 c = 0; c < QT_MAX_CHALLENGES; c++) s.acc[c] = 0;
    s.alpha_pows = pi_hash + 4;
    s.challenges = challenges;
    s.terms = terms;
    u32 t = 0;
    for (u32 c = 0; c < challenges; c++) qt_emit(&s, t++, gl_mul(l0, gl_sub(z[c], 1)));
    for (u32 c = 0; c < challenges; c++) {
        u64 beta = betas[c], gamma = gammas[c];
        const u64 *partials = z + challenges + c * prods;
        u64 prev = z[c];
        for (u32 k = 0, start = 0; start < routed; k++, start += chunk) {
            u64 num = 1, den = 1;
            for (u32 jw = start; jw < start + chunk && jw < routed; jw++) {
                num = gl_mul(num, gl_add(gl_add(w[jw], gl_mul(beta_k[c * routed + jw], x)), gamma));
                den = gl_mul(den, gl_add(gl_add(w[jw], gl_mul(beta, sigmas[jw])), gamma));
            }
            u64 acc = k < prods ? partials[k] : zn[c];
            qt_emit(&s, t++, gl_sub(gl_mul(prev, num), gl_mul(acc, den)));
            prev = acc;
        }
    }
    s.base = t;
    u32 num_selectors = shape[QT_SELECTORS];
    const u64 *gate_data = s.alpha_pows + challenges * terms;
    for (u32 g = 0; g < shape[QT_GATES]; g++) {
        const u32 *op = gates + g * QT_GATE_WORDS;
        u32 gate_row = op[4], sel = op[5], start = op[6], end = op[7];
        // plonky2's compute_filter: Π over the group's other gates of (index − selector), and
        // (UNUSED − selector) when there is more than one selector.
        u64 sv = cs[sel], filter = 1;
        for (u32 k = start; k < end; k++)
            if (k != gate_row) filter = gl_mul(filter, gl_sub((u64)k, sv));
        if (num_selectors > 1) filter = gl_mul(filter, gl_sub(QT_UNUSED_SELECTOR, sv));
        s.filter = filter;
        qt_gate(&s, op, cs + num_selectors, w, pi_hash, gate_data);
    }
    u64 inv = zh_inv[i & ((1ULL << qbits) - 1)];
    for (u32 c = 0; c < challenges; c++) out[c * size + i] = gl_mul(s.acc[c], inv);
}

#ifdef __CUDACC_RTC__
// One thread per point of the quotient coset.
extern "C" __global__ void qt_values(const u32 *shape, const u32 *gates, const u64 *params, const u64 *cs_rows,
                                     const u64 *wire_rows, const u64 *zs_rows, const u64 *xs, const u64 *l0s,
                                     const u64 *zh_inv, u64 size, u64 *out) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= size) return;
    qt_value_at(i, shape, gates, params, cs_rows, wire_rows, zs_rows, xs, l0s, zh_inv, out);
}
#else
// The host build: every point in turn.
static void qt_values_host(const u32 *shape, const u32 *gates, const u64 *params, const u64 *cs_rows,
                           const u64 *wire_rows, const u64 *zs_rows, const u64 *xs, const u64 *l0s,
                           const u64 *zh_inv, u64 size, u64 *out) {
    for (u64 i = 0; i < size; i++)
        qt_value_at(i, shape, gates, params, cs_rows, wire_rows, zs_rows, xs, l0s, zh_inv, out);
}
#endif
