// Batch kernels of the CUDA backend. The Poseidon prelude and the two headers are prepended by the
// Rust side before NVRTC compiles this file.

extern "C" __global__ void gl_scale_powers(u64 *data, const u64 *powers, u32 n, u32 batch) {
    u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (u64)n * batch) return;
    data[idx] = gl_mul(data[idx], powers[idx % n]);
}

extern "C" __global__ void gl_bit_reverse(const u64 *in, u64 *out, u32 log_n, u32 batch) {
    u64 n = 1ULL << log_n;
    u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n * batch) return;
    u64 poly = idx >> log_n, i = idx & (n - 1);
    u64 r = __brevll(i) >> (64 - log_n);
    out[(poly << log_n) + r] = in[idx];
}

// One radix-2 decimation-in-time stage over bit-reversed input: butterflies of span `half`,
// twiddles tw[k * stride] = w^(k * stride) with w the n-th root of unity.
extern "C" __global__ void gl_ntt_stage(u64 *data, const u64 *tw, u32 log_n, u32 batch, u32 half, u32 stride) {
    u64 n = 1ULL << log_n;
    u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (n / 2) * batch) return;
    u64 poly = idx / (n / 2), b = idx % (n / 2);
    u64 group = b / half, k = b % half;
    u64 i = (poly << log_n) + group * 2 * half + k;
    u64 j = i + half;
    u64 v = gl_mul(data[j], tw[k * stride]);
    u64 u = data[i];
    data[i] = gl_add(u, v);
    data[j] = gl_sub(u, v);
}

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
