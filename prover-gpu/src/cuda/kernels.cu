// Batch kernels of the CUDA backend. The Poseidon prelude and the two headers are prepended by the
// Rust side before NVRTC compiles this file.

// Each of `batch` polynomials of 2^log_n times [1, x, x², …] (`powers`), element by element.
extern "C" __global__ void gl_scale_powers(u64 *data, const u64 *powers, u32 log_n, u32 batch) {
    u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= ((u64)batch << log_n)) return;
    data[idx] = gl_mul(data[idx], powers[idx & ((1ULL << log_n) - 1)]);
}

extern "C" __global__ void gl_bit_reverse(const u64 *in, u64 *out, u32 log_n, u32 batch) {
    u64 n = 1ULL << log_n;
    u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n * batch) return;
    u64 poly = idx >> log_n, i = idx & (n - 1);
    u64 r = __brevll(i) >> (64 - log_n);
    out[(poly << log_n) + r] = in[idx];
}

// K consecutive radix-2 decimation-in-time stages over bit-reversed input, the first of span
// 2^log_half (butterflies of i and i + 2^log_half), the last of span 2^(log_half + K - 1); twiddle
// w^(k·n/(2·span)) for the butterfly at offset k in its group, tw[j] = w^j with w the n-th root of
// unity. Each thread holds the 2^K elements base + t·2^log_half (t < 2^K) that those stages mix
// with each other only, in registers, so the data crosses memory once per K stages rather than
// once per stage. Threads: 2^(log_n - K) per polynomial; all index arithmetic is shifts.
#define GL_NTT_STAGES(K)                                                                                  \
    extern "C" __global__ void gl_ntt_stages_##K(u64 *data, const u64 *tw, u32 log_n, u32 batch, u32 log_half) { \
        u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x;                                             \
        u32 log_threads = log_n - K;                                                                      \
        if (idx >= ((u64)batch << log_threads)) return;                                                   \
        u64 poly = idx >> log_threads, rem = idx & ((1ULL << log_threads) - 1);                           \
        u64 offset = rem & ((1ULL << log_half) - 1), group = rem >> log_half;                              \
        u64 base = (poly << log_n) + (group << (log_half + K)) + offset;                                  \
        u64 v[1 << K];                                                                                    \
        GL_UNROLL                                                                                         \
        for (int t = 0; t < (1 << K); t++) v[t] = data[base + ((u64)t << log_half)];                      \
        GL_UNROLL                                                                                         \
        for (int s = 0; s < K; s++) {                                                                     \
            u32 log_stride = log_n - 1 - (log_half + s);                                                  \
            GL_UNROLL                                                                                     \
            for (int t = 0; t < (1 << K); t++) {                                                          \
                if (t & (1 << s)) continue;                                                               \
                u64 k = offset + ((u64)(t & ((1 << s) - 1)) << log_half);                                 \
                u64 x = gl_mul(v[t + (1 << s)], tw[k << log_stride]);                                     \
                u64 u = v[t];                                                                             \
                v[t] = gl_add(u, x);                                                                      \
                v[t + (1 << s)] = gl_sub(u, x);                                                           \
            }                                                                                             \
        }                                                                                                 \
        GL_UNROLL                                                                                         \
        for (int t = 0; t < (1 << K); t++) data[base + ((u64)t << log_half)] = v[t];                      \
    }
GL_NTT_STAGES(1)
GL_NTT_STAGES(2)
GL_NTT_STAGES(3)
GL_NTT_STAGES(4)

extern "C" __global__ void psn_hash_rows(const u64 *rows, u32 width, u32 count, u64 *out) {
    u64 r = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= count) return;
    psn_hash_or_noop(rows + r * width, width, 1, out + 4 * r);
}

extern "C" __global__ void psn_hash_pairs(const u64 *children, u32 count, u64 *out) {
    u64 r = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= count) return;
    psn_two_to_one(children + 8 * r, children + 8 * r + 4, out + 4 * r);
}

// The commitment on the device, kernel by kernel as `CudaBackend::commit_tree` launches them.

// Coefficients of `batch` polynomials of 2^log_n into zero-filled slots of 2^log_m: the input of
// the coset LDE.
extern "C" __global__ void gl_spread(const u64 *in, u64 *out, u32 log_n, u32 log_m, u32 batch) {
    u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= ((u64)batch << log_n)) return;
    u64 poly = idx >> log_n, i = idx & ((1ULL << log_n) - 1);
    out[(poly << log_m) + i] = in[idx];
}

// plonky2's leaves: row r holds every polynomial's value at point reverse_bits(r), row-major.
// One thread per element written, so the writes are coalesced.
extern "C" __global__ void gl_rows_bit_reversed(const u64 *values, u64 *rows, u32 log_m, u32 batch) {
    u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= ((u64)batch << log_m)) return;
    u64 r = idx / batch, poly = idx % batch;
    u64 src = log_m == 0 ? 0 : __brevll(r) >> (64 - log_m);
    rows[idx] = values[(poly << log_m) + src];
}

// Position, in the digest buffer of one cap subtree of height k, of the node at height h (0 =
// leaf digests) with index j among its level: plonky2's recursive layout `left subtree || left
// child || right child || right subtree` (prover-gpu/src/layout.rs, `digest_position`).
GL_FN u64 mt_digest_position(u32 k, u32 h, u64 j) {
    u64 offset = 0;
    for (;;) {
        u64 n = 1ULL << k;
        if (h == k - 1) return offset + n - 2 + j;
        u64 half = 1ULL << (k - 1 - h);
        if (j >= half) {
            offset += n;
            j -= half;
        }
        k -= 1;
    }
}

// One level of the Merkle tree, for `count` parents: places the 2·count digests of height h in
// plonky2's layout (2^cap_height subtrees of height sub_height) and hashes them in pairs into
// `next`. Run for h = 0 .. sub_height - 1; the last `next` is the cap.
extern "C" __global__ void psn_merkle_level(const u64 *level, u64 *next, u64 *digests, u32 count, u32 sub_height,
                                            u32 h) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    u64 per_subtree = 2 * ((1ULL << sub_height) - 1);
    u32 span = sub_height - h;
    for (u64 c = 2 * i; c < 2 * i + 2; c++) {
        u64 tree = c >> span, j = c & ((1ULL << span) - 1);
        u64 pos = tree * per_subtree + mt_digest_position(sub_height, h, j);
        for (int k = 0; k < 4; k++) digests[4 * pos + k] = level[4 * c + k];
    }
    psn_two_to_one(level + 8 * i, level + 8 * i + 4, next + 4 * i);
}

// FRI's proof of work: candidate `start + i` written at `slot` of the transcript's state (12
// canonical words), permuted; the smallest candidate whose element 7 (the challenge drawn next)
// has `min_zeros` leading zeros goes to `best`, which starts at ~0.
extern "C" __global__ void fri_grind(const u64 *state, u32 slot, u32 min_zeros, u64 start, u64 count,
                                     unsigned long long *best) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    u64 s[PSN_WIDTH];
    for (int k = 0; k < PSN_WIDTH; k++) s[k] = state[k];
    s[slot] = start + i;
    psn_permute(s);
    if ((u32)__clzll(s[7]) >= min_zeros) atomicMin(best, (unsigned long long)(start + i));
}

// Rows `indices[0 .. count)` of a commitment's leaves (`width` elements a row, row after row), one
// after another into `out`: FRI's query rows of leaves kept on the device. The host checks every
// index against the number of rows first.
extern "C" __global__ void gl_gather_rows(const u64 *rows, u32 width, const u64 *indices, u32 count, u64 *out) {
    u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (u64)count * width) return;
    u64 q = idx / width, k = idx % width;
    out[idx] = rows[indices[q] * width + k];
}

// The inverse NTT's last step, as the backend trait's `intt_batch` derives it from the forward
// transform: coefficient j of each of `batch` polynomials of 2^log_n is its values' DFT at
// (n − j) mod n, times n⁻¹ (`n_inv`, canonical).
extern "C" __global__ void gl_intt_finish(const u64 *dft, u64 *coeffs, u32 log_n, u32 batch, u64 n_inv) {
    u64 n = 1ULL << log_n;
    u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n * batch) return;
    u64 poly = idx >> log_n, j = idx & (n - 1);
    coeffs[idx] = gl_mul(dft[(poly << log_n) + ((n - j) & (n - 1))], n_inv);
}

// Merkle paths of the leaves `indices[0 .. count)` of a tree whose digests are on the device, in
// plonky2's layout (subtrees of height `sub_height` under the cap, one after another): for leaf q
// and height h, the sibling of its ancestor at height h (0 = the leaf's digest), written at
// out[4·(q·sub_height + h)], as plonky2's `MerkleTree::prove` lists them. The host checks every
// index against the number of leaves first.
extern "C" __global__ void psn_gather_paths(const u64 *digests, u32 sub_height, const u64 *indices, u32 count,
                                            u64 *out) {
    u64 t = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (sub_height == 0 || t >= (u64)count * sub_height) return;
    u64 q = t / sub_height;
    u32 h = (u32)(t % sub_height);
    u64 leaf = indices[q];
    u64 tree = leaf >> sub_height, j = leaf & ((1ULL << sub_height) - 1);
    u64 per_subtree = 2 * ((1ULL << sub_height) - 1);
    u64 pos = tree * per_subtree + mt_digest_position(sub_height, h, (j >> h) ^ 1);
    for (int k = 0; k < 4; k++) out[4 * t + k] = digests[4 * pos + k];
}

// The openings' dot products, in parts: thread t takes polynomial t >> (log_n - log_chunk) and
// its chunk of 2^log_chunk coefficients (t's low bits), and writes the sums of those
// coefficients times the extension powers of the point (`powers`: 2^log_n pairs (a, b), a + b·X),
// both components, to out[2t], out[2t + 1]. The host adds each polynomial's chunks (a base
// coefficient times an extension power is two base products, so no extension product here).
extern "C" __global__ void gl_dot_chunks(const u64 *coeffs, const u64 *powers, u32 log_n, u32 batch, u32 log_chunk,
                                         u64 *out) {
    u64 t = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    u32 log_chunks = log_n - log_chunk;
    if (t >= ((u64)batch << log_chunks)) return;
    u64 poly = t >> log_chunks, first = (t & ((1ULL << log_chunks) - 1)) << log_chunk;
    const u64 *c = coeffs + (poly << log_n) + first;
    const u64 *x = powers + 2 * first;
    Gl160 a = {0, 0, 0}, b = {0, 0, 0};
    for (u64 j = 0; j < (1ULL << log_chunk); j++) {
        gl_mac160(&a, c[j], x[2 * j]);
        gl_mac160(&b, c[j], x[2 * j + 1]);
    }
    out[2 * t] = gl_reduce160(a);
    out[2 * t + 1] = gl_reduce160(b);
}

// FRI's combination, one commitment's share: coefficient j of Σ_k powers_k · p_{indices[k]}
// (`count` terms, extension powers as pairs), both components to out[2j], out[2j + 1]. The host
// checks every index against the commitment's polynomials first.
extern "C" __global__ void gl_combine(const u64 *coeffs, const u64 *indices, const u64 *powers, u32 count, u32 log_n,
                                      u64 *out) {
    u64 j = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= (1ULL << log_n)) return;
    Gl160 a = {0, 0, 0}, b = {0, 0, 0};
    for (u32 k = 0; k < count; k++) {
        u64 c = coeffs[(indices[k] << log_n) + j];
        gl_mac160(&a, c, powers[2 * k]);
        gl_mac160(&b, c, powers[2 * k + 1]);
    }
    out[2 * j] = gl_reduce160(a);
    out[2 * j + 1] = gl_reduce160(b);
}
