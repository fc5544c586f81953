//! The device-side Goldilocks and Poseidon code, compiled by the host C compiler and checked
//! against plonky2 on random and edge inputs: runs on every machine, GPU or not.

use std::fmt::Write;
use std::process::Command;

use plonky2::field::types::{Field, Field64, PrimeField64, Sample};
use plonky2::hash::hash_types::HashOut;
use plonky2::hash::poseidon::{Poseidon, PoseidonHash};
use plonky2::plonk::config::Hasher;
use prover_gpu::F;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn c_array(v: &[u64]) -> String {
    v.iter().map(|x| format!("{x}ULL")).collect::<Vec<_>>().join(",")
}

#[test]
fn host_compiled_arithmetic_matches_plonky2() {
    let mut rng = StdRng::seed_from_u64(9);
    let p = F::ORDER;
    let mut xs: Vec<u64> = vec![0, 1, 2, p - 1, p - 2, 1 << 32, (1 << 32) - 1, (1 << 63), p >> 1, u32::MAX as u64 * 3];
    xs.extend((0..200).map(|_| F::sample(&mut rng).to_canonical_u64()));
    let mut pairs = Vec::new();
    for (i, &a) in xs.iter().enumerate() {
        pairs.push((a, xs[(i * 7 + 3) % xs.len()]));
        pairs.push((a, a));
    }
    let f = F::from_canonical_u64;
    let mut expected = Vec::new();
    for &(a, b) in &pairs {
        expected.push((f(a) + f(b)).to_canonical_u64());
        expected.push((f(a) - f(b)).to_canonical_u64());
        expected.push((f(a) * f(b)).to_canonical_u64());
        expected.push(f(a).exp_u64(7).to_canonical_u64());
    }
    // Permutations, hashes of awkward lengths, and two_to_one.
    // Random states, and the largest lanes (the MDS sums' bound).
    let mut states: Vec<[F; 12]> = (0..20).map(|_| std::array::from_fn(|_| F::sample(&mut rng))).collect();
    states.push([F::NEG_ONE; 12]);
    states.push(std::array::from_fn(|i| if i % 2 == 0 { F::NEG_ONE } else { F::ZERO }));
    let mut perm_expected = Vec::new();
    for s in &states {
        perm_expected.extend(<F as Poseidon>::poseidon(*s).map(|x| x.to_canonical_u64()));
    }
    // The MDS layer alone: random states, the largest lanes, and a state whose first row's sum
    // carries from the low word into the high word (its halves' sums are (2^32 - 1)·2^32 and
    // at least 2^32), which random states almost never do.
    let mut mds_states = states.clone();
    mds_states.push(carrying_mds_state());
    let mut mds_expected = Vec::new();
    for s in &mds_states {
        mds_expected.extend(<F as Poseidon>::mds_layer(s).map(|x| x.to_canonical_u64()));
    }
    let lens = [1usize, 3, 4, 5, 8, 9, 16, 17, 135];
    let inputs: Vec<Vec<F>> = lens.iter().map(|&n| (0..n).map(|_| F::sample(&mut rng)).collect()).collect();
    let mut hash_expected = Vec::new();
    for v in &inputs {
        hash_expected.extend(PoseidonHash::hash_or_noop(v).elements.map(|x| x.to_canonical_u64()));
    }
    let l = HashOut { elements: std::array::from_fn(|_| F::sample(&mut rng)) };
    let r = HashOut { elements: std::array::from_fn(|_| F::sample(&mut rng)) };
    let pair_expected = PoseidonHash::two_to_one(l, r).elements.map(|x| x.to_canonical_u64());

    let mut src = String::new();
    src.push_str("#include <stdio.h>\n");
    src.push_str(&prover_gpu::cuda::headers(false));
    let flat_pairs: Vec<u64> = pairs.iter().flat_map(|&(a, b)| [a, b]).collect();
    let flat_states: Vec<u64> = states.iter().flat_map(|s| s.map(|x| x.to_canonical_u64())).collect();
    let flat_inputs: Vec<u64> = inputs.iter().flatten().map(|x| x.to_canonical_u64()).collect();
    let _ = writeln!(src, "static const u64 PAIRS[] = {{{}}};", c_array(&flat_pairs));
    let _ = writeln!(src, "static const u64 EXPECTED[] = {{{}}};", c_array(&expected));
    let _ = writeln!(src, "static const u64 STATES[] = {{{}}};", c_array(&flat_states));
    let _ = writeln!(src, "static const u64 PERM[] = {{{}}};", c_array(&perm_expected));
    let flat_mds: Vec<u64> = mds_states.iter().flat_map(|s| s.map(|x| x.to_canonical_u64())).collect();
    let _ = writeln!(src, "static const u64 MDS_STATES[] = {{{}}};", c_array(&flat_mds));
    let _ = writeln!(src, "static const u64 MDS[] = {{{}}};", c_array(&mds_expected));
    let _ = writeln!(src, "static const u64 INPUTS[] = {{{}}};", c_array(&flat_inputs));
    let _ = writeln!(src, "static const u32 LENS[] = {{{}}};", lens.map(|x| x.to_string()).join(","));
    let _ = writeln!(src, "static const u64 HASHES[] = {{{}}};", c_array(&hash_expected));
    let lr: Vec<u64> = l.elements.iter().chain(&r.elements).map(|x| x.to_canonical_u64()).collect();
    let _ = writeln!(src, "static const u64 LR[] = {{{}}};", c_array(&lr));
    let _ = writeln!(src, "static const u64 PAIR[] = {{{}}};", c_array(&pair_expected));
    let _ = writeln!(
        src,
        r#"
int main(void) {{
    int bad = 0;
    for (unsigned i = 0; i < {np}; i++) {{
        u64 a = PAIRS[2*i], b = PAIRS[2*i+1];
        u64 got[4] = {{gl_add(a, b), gl_sub(a, b), gl_mul(a, b), gl_pow7(a)}};
        for (int k = 0; k < 4; k++) if (got[k] != EXPECTED[4*i+k]) {{ printf("op %d on %llu %llu\n", k, (unsigned long long)a, (unsigned long long)b); bad++; }}
        // Products take any 64-bit input (the S-box feeds them gl_mul_partial's): a + p, where
        // it fits, is a's other representative; gl_mul_partial's result, canonicalized, is a·b.
        u64 a2 = a < GL_EPSILON ? a + GL_P : a;
        u64 part = gl_mul_partial(a2, b);
        if (gl_mul(a2, b) != EXPECTED[4*i+2] || (part >= GL_P ? part - GL_P : part) != EXPECTED[4*i+2]) {{
            printf("product of a non-canonical %llu and %llu\n", (unsigned long long)a2, (unsigned long long)b); bad++;
        }}
    }}
    for (unsigned i = 0; i < {ns}; i++) {{
        u64 s[12]; for (int k = 0; k < 12; k++) s[k] = STATES[12*i+k];
        psn_permute(s);
        for (int k = 0; k < 12; k++) if (s[k] != PERM[12*i+k]) {{ printf("permutation %u lane %d\n", i, k); bad++; }}
    }}
    for (unsigned i = 0; i < {nm}; i++) {{
        u64 s[12]; for (int k = 0; k < 12; k++) s[k] = MDS_STATES[12*i+k];
        psn_mds(s);
        for (int k = 0; k < 12; k++) if (s[k] != MDS[12*i+k]) {{ printf("MDS %u lane %d\n", i, k); bad++; }}
    }}
    const u64 *in = INPUTS;
    for (unsigned i = 0; i < {nl}; i++) {{
        u64 out[4]; psn_hash_or_noop(in, LENS[i], 1, out);
        for (int k = 0; k < 4; k++) if (out[k] != HASHES[4*i+k]) {{ printf("hash of %u elements\n", LENS[i]); bad++; }}
        in += LENS[i];
    }}
    u64 out[4]; psn_two_to_one(LR, LR + 4, out);
    for (int k = 0; k < 4; k++) if (out[k] != PAIR[k]) {{ printf("two_to_one\n"); bad++; }}
    printf("%d mismatches\n", bad);
    return bad != 0;
}}
"#,
        np = pairs.len(),
        ns = states.len(),
        nm = mds_states.len(),
        nl = lens.len()
    );
    let dir = std::env::temp_dir().join(format!("prover-gpu-host-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (ok, out) = build_and_run(&dir.join("harness.c"), ("CC", "cc"), &["-O2", "-std=c11", "-Wall", "-Werror"], src);
    assert!(ok, "host arithmetic differs from plonky2:\n{out}");
    assert!(out.contains("0 mismatches"));
    std::fs::remove_dir_all(&dir).ok();
}

/// A state whose first MDS row, summed over the lanes' 32-bit halves as `psn_mds` does, carries
/// from the low word into the high one: every low half is 2^32 - 1 (the low sum is at least
/// 2^32), and the first lane's high half makes the high sum 2^32 - 1 modulo 2^32.
fn carrying_mds_state() -> [F; 12] {
    let c0 = (<F as Poseidon>::MDS_MATRIX_CIRC[0] + <F as Poseidon>::MDS_MATRIX_DIAG[0]) as u32;
    assert_eq!(c0 % 2, 1, "the first row's own entry is odd, so it has an inverse modulo 2^32");
    // c0⁻¹ modulo 2^32 by Newton's iteration (each step doubles the correct bits).
    let mut inv = c0;
    for _ in 0..5 {
        inv = inv.wrapping_mul(2u32.wrapping_sub(c0.wrapping_mul(inv)));
    }
    let hi0 = inv.wrapping_neg();
    assert_eq!(c0.wrapping_mul(hi0), u32::MAX);
    assert!(hi0 < u32::MAX, "a canonical lane");
    let low = u64::from(u32::MAX);
    std::array::from_fn(|i| F::from_canonical_u64(if i == 0 { u64::from(hi0) << 32 | low } else { low }))
}

/// The NTT's stage launches over `data` (bit-reversed, `batch × 2^log_n` elements, twiddles in
/// `TWIDDLES`), grouped as `CudaBackend` groups them.
fn ntt_launches(data: &str, log_n: usize) -> String {
    prover_gpu::cuda::ntt_stage_groups(log_n as u32)
        .into_iter()
        .map(|(log_half, k)| {
            format!("LAUNCH(all >> {k}, gl_ntt_stages_{k}({data}, TWIDDLES, {log_n}, batch, {log_half}));")
        })
        .collect::<Vec<_>>()
        .join("\n    ")
}

/// Writes `src` to `path`, compiles it with the host compiler named by the environment variable
/// `compiler.0` (else `compiler.1`) and `flags`, and runs it: whether it exited with success,
/// and its output. A harness that does not build fails the test with the compiler's errors.
fn build_and_run(path: &std::path::Path, compiler: (&str, &str), flags: &[&str], src: String) -> (bool, String) {
    std::fs::write(path, src).expect("write harness");
    let exe = path.with_extension("");
    let cc = std::env::var(compiler.0).unwrap_or_else(|_| compiler.1.into());
    let built = Command::new(&cc)
        .args(flags)
        .arg("-o")
        .arg(&exe)
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("a host compiler ({cc}): {e}"));
    assert!(
        built.status.success(),
        "{} does not build on the host:\n{}",
        path.display(),
        String::from_utf8_lossy(&built.stderr)
    );
    let run = Command::new(&exe).output().expect("run harness");
    (run.status.success(), String::from_utf8_lossy(&run.stdout).into_owned())
}

// `CUDA_STUBS`: enough of CUDA's built-ins for a host C++ compiler to check the device sources'
// syntax and types (NVRTC compiles C++, which the host C build of the same headers does not
// exercise), and to run the kernels as ordinary functions.
use prover_gpu::cuda::emulated::CUDA_STUBS;

/// `LAUNCH(threads, call)`: every thread of a grid of whole 64-thread blocks, as the device would
/// run them (in some order), each a call of the kernel under [`CUDA_STUBS`].
const GRID_LAUNCH: &str = r#"
#define BLOCK 64ULL
#define LAUNCH(threads, call) do { \
    unsigned long long total_ = ((threads) + BLOCK - 1) / BLOCK * BLOCK; blockDim.x = BLOCK; \
    for (unsigned long long t_ = 0; t_ < total_; t_++) { \
        blockIdx.x = (unsigned)(t_ / BLOCK); threadIdx.x = (unsigned)(t_ % BLOCK); call; } } while (0)
"#;

#[test]
fn device_sources_are_valid_cuda_cpp() {
    let dir = std::env::temp_dir().join(format!("prover-gpu-cpp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    for (name, src) in
        [("kernels", prover_gpu::cuda::kernels_source()), ("quotient", prover_gpu::cuda::quotient_source(true))]
    {
        let path = dir.join(format!("{name}.cu.cpp"));
        std::fs::write(&path, format!("{CUDA_STUBS}\n{src}")).expect("write");
        let out = Command::new(&cxx)
            .args([
                "-std=c++17",
                "-fsyntax-only",
                "-Wall",
                "-Wno-unused-function",
                "-Wno-unused-variable",
                "-Werror",
                "-pedantic-errors",
            ])
            .arg(&path)
            .output()
            .expect("a host C++ compiler (c++)");
        assert!(out.status.success(), "{name} is not valid C++:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Runs `kernels.cu` on the host: each kernel is an ordinary function under the stubs, called
/// once per thread of its grid, in the order `CudaBackend::commit_tree` launches them. The
/// result must be plonky2's `PolynomialBatch::from_coeffs` tree: leaves, digests and cap; and
/// the rows and Merkle paths `CudaBackend::leaf_rows` and `merkle_paths` gather from what the
/// commitment kept must be plonky2's leaves and `MerkleTree::prove`.
#[test]
fn device_commitment_kernels_emulated_on_the_host_equal_plonky2() {
    use plonky2::field::polynomial::PolynomialCoeffs;
    use plonky2::fri::oracle::PolynomialBatch;
    use plonky2::plonk::config::PoseidonGoldilocksConfig;
    use plonky2::util::timing::TimingTree;
    use prover_gpu::cpu::powers;

    let dir = std::env::temp_dir().join(format!("prover-gpu-emulated-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut rng = StdRng::seed_from_u64(21);
    let rate_bits = 3;
    // (log2 coefficients, polynomials, cap height): one polynomial; a cap of height 0 (the root);
    // the batch circuit's 135 wires; a tree that is all cap.
    for (log_n, batch, cap_height) in [(1usize, 1usize, 0usize), (5, 7, 3), (4, 135, 2), (3, 4, 6)] {
        let n = 1 << log_n;
        let (log_m, m) = (log_n + rate_bits, n << rate_bits);
        let coeffs: Vec<F> = (0..n * batch).map(|_| F::sample(&mut rng)).collect();
        let polys = coeffs.chunks(n).map(|c| PolynomialCoeffs::new(c.to_vec())).collect();
        let reference = PolynomialBatch::<F, PoseidonGoldilocksConfig, 2>::from_coeffs(
            polys,
            rate_bits,
            false,
            cap_height,
            &mut TimingTree::default(),
            None,
        );
        let tree = &reference.merkle_tree;
        let words = |v: &[F]| c_array(&v.iter().map(|x| x.to_canonical_u64()).collect::<Vec<_>>());
        let digest_words = |d: &[HashOut<F>]| {
            let flat: Vec<F> = d.iter().flat_map(|h| h.elements).collect();
            words(&flat)
        };
        let sub_height = log_m - cap_height;
        let mut src = format!("{CUDA_STUBS}\n#include <stdio.h>\n#include <stdlib.h>\n");
        src.push_str(&prover_gpu::cuda::kernels_source());
        src.push_str(GRID_LAUNCH);
        let _ = writeln!(src, "static const u64 COEFFS[] = {{{}}};", words(&coeffs));
        let _ = writeln!(src, "static const u64 SHIFTS[] = {{{}}};", words(&powers(F::coset_shift(), m)));
        let twiddles = powers(F::primitive_root_of_unity(log_m), m / 2);
        let _ = writeln!(src, "static const u64 TWIDDLES[] = {{{}}};", words(&twiddles));
        let _ = writeln!(src, "static const u64 ROWS[] = {{{}}};", words(&tree.leaves.concat()));
        // An empty C array is not valid C++: the digests of an all-cap tree get one dummy word.
        let digests = if tree.digests.is_empty() { "0".to_string() } else { digest_words(&tree.digests) };
        let _ = writeln!(src, "static const u64 DIGESTS[] = {{{digests}}};");
        let _ = writeln!(src, "static const u64 CAP[] = {{{}}};", digest_words(&tree.cap.0));
        // FRI's query rows of leaves kept on the device: the first, the last, random, repeated.
        let mut picks: Vec<usize> = (0..5).map(|_| rng.gen_range(0..m)).collect();
        picks.extend([0, m - 1, picks[0]]);
        let picked: Vec<F> = picks.iter().flat_map(|&r| tree.leaves[r].clone()).collect();
        let pick_words: Vec<u64> = picks.iter().map(|&r| r as u64).collect();
        let _ = writeln!(src, "static const u64 PICKS[] = {{{}}};", c_array(&pick_words));
        let _ = writeln!(src, "static const u64 PICKED[] = {{{}}};", words(&picked));
        let num_picks = picks.len();
        // Their Merkle paths, as plonky2's `prove` gives them (one dummy word for no siblings).
        let paths: Vec<HashOut<F>> = picks.iter().flat_map(|&r| tree.prove(r).siblings).collect();
        let paths = if paths.is_empty() { "0".to_string() } else { digest_words(&paths) };
        let _ = writeln!(src, "static const u64 PATHS[] = {{{paths}}};");
        let _ = writeln!(
            src,
            r#"
static int compare(const char *what, const u64 *got, const u64 *want, unsigned long long len) {{
    for (unsigned long long i = 0; i < len; i++)
        if (got[i] != want[i]) {{ printf("%s differs at word %llu\n", what, i); return 1; }}
    return 0;
}}

int main(void) {{
    const u32 log_n = {log_n}, log_m = {log_m}, batch = {batch}, sub_height = {sub_height}, cap_height = {cap_height};
    const unsigned long long n = 1ULL << log_n, m = 1ULL << log_m, all = batch * m;
    u64 *a = (u64 *)calloc(all, 8), *b = (u64 *)calloc(all, 8), *rows = (u64 *)calloc(all, 8);
    LAUNCH(batch * n, gl_spread(COEFFS, a, log_n, log_m, batch));
    LAUNCH(all, gl_scale_powers(a, SHIFTS, log_m, batch));
    LAUNCH(all, gl_bit_reverse(a, b, log_m, batch));
    {{stages}}
    LAUNCH(all, gl_rows_bit_reversed(b, rows, log_m, batch));
    u64 *level = (u64 *)calloc(4 * m, 8);
    LAUNCH(m, psn_hash_rows(rows, batch, (u32)m, level));
    unsigned long long digest_words = 4 * (2 * ((1ULL << sub_height) - 1) << cap_height);
    u64 *digests = (u64 *)calloc(digest_words + 1, 8);
    for (u32 h = 0; h < sub_height; h++) {{
        unsigned long long count = m >> (h + 1);
        u64 *next = (u64 *)calloc(4 * count, 8);
        LAUNCH(count, psn_merkle_level(level, next, digests, (u32)count, sub_height, h));
        free(level);
        level = next;
    }}
    const u32 picks = {num_picks};
    u64 *picked = (u64 *)calloc(picks * batch, 8);
    LAUNCH(picks * batch, gl_gather_rows(rows, batch, PICKS, picks, picked));
    u64 *paths = (u64 *)calloc(4 * picks * sub_height + 1, 8);
    LAUNCH(picks * sub_height, psn_gather_paths(digests, sub_height, PICKS, picks, paths));
    int bad = compare("rows", rows, ROWS, all) + compare("digests", digests, DIGESTS, digest_words)
        + compare("cap", level, CAP, 4ULL << cap_height) + compare("gathered rows", picked, PICKED, picks * batch)
        + compare("gathered paths", paths, PATHS, 4 * picks * sub_height);
    printf("%d mismatches\n", bad);
    return bad != 0;
}}
"#
        );
        let path = dir.join(format!("commit_{log_n}_{batch}_{cap_height}.cpp"));
        let src = src.replace("{stages}", &ntt_launches("b", log_m));
        let flags = ["-O1", "-std=c++17", "-Wall", "-Wno-unused-function", "-Werror"];
        let (ok, out) = build_and_run(&path, ("CXX", "c++"), &flags, src);
        assert!(
            ok && out.contains("0 mismatches"),
            "n = {n}, {batch} polynomials, cap height {cap_height}: the device commitment differs from plonky2:\n{out}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The CUDA backend's `commit_values_tree` up to its coefficients, on the host as above: the
/// forward NTT of the values (scaled by the powers of one, bit-reversed, the stages), then
/// `gl_intt_finish`. The coefficients must be plonky2's `ifft` of each polynomial.
#[test]
fn device_intt_kernels_emulated_on_the_host_equal_plonky2s_ifft() {
    use plonky2::field::polynomial::PolynomialValues;
    use prover_gpu::cpu::powers;

    let dir = std::env::temp_dir().join(format!("prover-gpu-intt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut rng = StdRng::seed_from_u64(22);
    for (log_n, batch) in [(1usize, 1usize), (3, 5), (6, 3)] {
        let n = 1usize << log_n;
        let values: Vec<F> = (0..n * batch).map(|_| F::sample(&mut rng)).collect();
        let coeffs: Vec<F> = values.chunks(n).flat_map(|v| PolynomialValues::new(v.to_vec()).ifft().coeffs).collect();
        let words = |v: &[F]| c_array(&v.iter().map(|x| x.to_canonical_u64()).collect::<Vec<_>>());
        let mut src = format!("{CUDA_STUBS}\n#include <stdio.h>\n#include <stdlib.h>\n");
        src.push_str(&prover_gpu::cuda::kernels_source());
        src.push_str(GRID_LAUNCH);
        let _ = writeln!(src, "static const u64 VALUES[] = {{{}}};", words(&values));
        let _ = writeln!(src, "static const u64 ONES[] = {{{}}};", words(&vec![F::ONE; n]));
        let _ = writeln!(
            src,
            "static const u64 TWIDDLES[] = {{{}}};",
            words(&powers(F::primitive_root_of_unity(log_n), n / 2))
        );
        let _ = writeln!(src, "static const u64 COEFFS[] = {{{}}};", words(&coeffs));
        let n_inv = F::inverse_2exp(log_n).to_canonical_u64();
        let _ = writeln!(
            src,
            r#"
int main(void) {{
    const u32 log_n = {log_n}, batch = {batch};
    const unsigned long long n = 1ULL << log_n, all = batch * n;
    u64 *a = (u64 *)calloc(all, 8), *b = (u64 *)calloc(all, 8), *c = (u64 *)calloc(all, 8);
    for (unsigned long long i = 0; i < all; i++) a[i] = VALUES[i];
    LAUNCH(all, gl_scale_powers(a, ONES, log_n, batch));
    LAUNCH(all, gl_bit_reverse(a, b, log_n, batch));
    {{stages}}
    LAUNCH(all, gl_intt_finish(b, c, log_n, batch, {n_inv}ULL));
    int bad = 0;
    for (unsigned long long i = 0; i < all; i++)
        if (c[i] != COEFFS[i]) {{ printf("coefficient %llu differs\n", i); bad++; break; }}
    printf("%d mismatches\n", bad);
    return bad != 0;
}}
"#
        );
        let path = dir.join(format!("intt_{log_n}_{batch}.cpp"));
        let src = src.replace("{stages}", &ntt_launches("b", log_n));
        let flags = ["-O1", "-std=c++17", "-Wall", "-Wno-unused-function", "-Werror"];
        let (ok, out) = build_and_run(&path, ("CXX", "c++"), &flags, src);
        assert!(ok && out.contains("0 mismatches"), "n = {n}, {batch} polynomials: {out}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `gl_dot_chunks` and `gl_combine`, the device's openings and FRI combination over kept
/// coefficients, on the host as above: every chunk's two sums equal the base-field dot products
/// of its coefficients with the point's powers (so the host adds them into the rayon backend's
/// `evaluate_coeffs` values), and the combination equals `combine_coeffs`.
#[test]
fn device_opening_kernels_emulated_on_the_host_equal_the_host_backends() {
    use plonky2::field::extension::{Extendable, FieldExtension};
    use prover_gpu::backend::{combine_coeffs, evaluate_coeffs};

    type FE = <F as Extendable<2>>::Extension;
    let dir = std::env::temp_dir().join(format!("prover-gpu-openings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut rng = StdRng::seed_from_u64(23);
    let p = F::ORDER;
    for (log_n, batch, log_chunk) in [(0usize, 2usize, 0usize), (3, 5, 1), (10, 3, 8)] {
        let n = 1usize << log_n;
        let mut coeffs: Vec<F> = (0..n * batch).map(|_| F::sample(&mut rng)).collect();
        // The largest values too, for the 160-bit sums.
        coeffs[0] = F::from_canonical_u64(p - 1);
        let x = FE::from_basefield_array([F::from_canonical_u64(p - 1), F::sample(&mut rng)]);
        let powers: Vec<FE> = x.powers().take(n).collect();
        let polys: Vec<&[F]> = coeffs.chunks(n).collect();
        let words = |v: &[F]| c_array(&v.iter().map(|x| x.to_canonical_u64()).collect::<Vec<_>>());
        let ext = |v: &[FE]| words(&v.iter().flat_map(FieldExtension::<2>::to_basefield_array).collect::<Vec<_>>());
        // Each chunk's sums, polynomial by polynomial; they add up to the host's values.
        let chunk = 1 << log_chunk;
        let parts: Vec<FE> = polys
            .iter()
            .flat_map(|poly| {
                poly.chunks(chunk)
                    .zip(powers.chunks(chunk))
                    .map(|(c, xs)| c.iter().zip(xs).map(|(&c, &x)| FieldExtension::<2>::scalar_mul(&x, c)).sum::<FE>())
                    .collect::<Vec<_>>()
            })
            .collect();
        let per_poly: Vec<FE> = parts.chunks(n / chunk).map(|c| c.iter().copied().sum()).collect();
        assert_eq!(per_poly, evaluate_coeffs(&polys, &[x]).remove(0), "the chunks add up to the host's values");
        let indices = [batch - 1, 0, batch - 1];
        let weights = [FE::sample(&mut rng), FE::ONE, FE::sample(&mut rng)];
        let combined = combine_coeffs(&polys, &indices, &weights, n).expect("a combination");
        let mut src = format!("{CUDA_STUBS}\n#include <stdio.h>\n#include <stdlib.h>\n");
        src.push_str(&prover_gpu::cuda::kernels_source());
        src.push_str(GRID_LAUNCH);
        let _ = writeln!(src, "static const u64 COEFFS[] = {{{}}};", words(&coeffs));
        let _ = writeln!(src, "static const u64 POWERS[] = {{{}}};", ext(&powers));
        let _ = writeln!(src, "static const u64 PARTS[] = {{{}}};", ext(&parts));
        let _ = writeln!(src, "static const u64 INDICES[] = {{{}}};", c_array(&indices.map(|i| i as u64)));
        let _ = writeln!(src, "static const u64 WEIGHTS[] = {{{}}};", ext(&weights));
        let _ = writeln!(src, "static const u64 COMBINED[] = {{{}}};", ext(&combined));
        let _ = writeln!(
            src,
            r#"
int main(void) {{
    const u32 log_n = {log_n}, batch = {batch}, log_chunk = {log_chunk};
    const unsigned long long parts = (unsigned long long)batch << (log_n - log_chunk), n = 1ULL << log_n;
    u64 *out = (u64 *)calloc(2 * parts, 8), *combined = (u64 *)calloc(2 * n, 8);
    LAUNCH(parts, gl_dot_chunks(COEFFS, POWERS, log_n, batch, log_chunk, out));
    LAUNCH(n, gl_combine(COEFFS, INDICES, WEIGHTS, 3, log_n, combined));
    int bad = 0;
    for (unsigned long long i = 0; i < 2 * parts; i++)
        if (out[i] != PARTS[i]) {{ printf("chunk sum word %llu differs\n", i); bad++; break; }}
    for (unsigned long long i = 0; i < 2 * n; i++)
        if (combined[i] != COMBINED[i]) {{ printf("combined word %llu differs\n", i); bad++; break; }}
    printf("%d mismatches\n", bad);
    return bad != 0;
}}
"#
        );
        let path = dir.join(format!("openings_{log_n}_{batch}.cpp"));
        let flags = ["-O1", "-std=c++17", "-Wall", "-Wno-unused-function", "-Werror"];
        let (ok, out) = build_and_run(&path, ("CXX", "c++"), &flags, src);
        assert!(ok && out.contains("0 mismatches"), "n = {n}, {batch} polynomials, chunks of {chunk}: {out}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `fri_grind` on the host, every thread of its grid: the smallest witness of the range, the
/// one our transcript's `pow_response` finds (checked there against plonky2's challenger), and
/// none when the range holds none.
#[test]
fn device_grind_kernel_emulated_on_the_host_finds_the_first_witness() {
    use prover_gpu::transcript::{pow_response, Transcript};

    let dir = std::env::temp_dir().join(format!("prover-gpu-grind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut rng = StdRng::seed_from_u64(5);
    // Pending inputs 0 (the witness at slot 0), 3 and 7 (the last input slot).
    for pending in [8usize, 3, 7] {
        let mut t = Transcript::new();
        t.observe_elements(&(0..pending).map(|_| F::sample(&mut rng)).collect::<Vec<_>>());
        let (state, slot) = t.pow_state();
        let bits = 8;
        let start = rng.gen_range(0..1_000_000u64);
        let hit = |c: u64| pow_response(&state, slot, c).to_canonical_u64().leading_zeros() >= bits;
        let first = (start..).find(|&c| hit(c)).expect("a witness");
        let words: Vec<u64> = state.iter().map(|x| x.to_canonical_u64()).collect();
        // The range past the first witness holds later ones too; the one before holds none.
        for (count, want) in [(first - start + 700, first), (first - start, u64::MAX)] {
            let src = format!(
                r#"{CUDA_STUBS}
#include <stdio.h>
{kernels}
static const u64 STATE[] = {{{state}}};
int main(void) {{
    unsigned long long best = ~0ULL, count = {count}ULL;
    blockDim.x = 64;
    for (unsigned long long t = 0; t < (count + 63) / 64 * 64; t++) {{
        blockIdx.x = (unsigned)(t / 64); threadIdx.x = (unsigned)(t % 64);
        fri_grind(STATE, {slot}, {bits}, {start}ULL, count, &best);
    }}
    printf("best %llu\n", best);
    return 0;
}}
"#,
                kernels = prover_gpu::cuda::kernels_source(),
                state = c_array(&words),
            );
            let path = dir.join(format!("grind_{pending}_{count}.cpp"));
            let flags = ["-O1", "-std=c++17", "-Wall", "-Wno-unused-function", "-Werror"];
            let (ok, out) = build_and_run(&path, ("CXX", "c++"), &flags, src);
            assert!(ok && out.contains(&format!("best {want}\n")), "slot {slot}, {count} from {start}: {out}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
