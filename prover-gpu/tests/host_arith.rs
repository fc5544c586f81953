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
use rand::SeedableRng;

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
    let states: Vec<[F; 12]> = (0..20).map(|_| std::array::from_fn(|_| F::sample(&mut rng))).collect();
    let mut perm_expected = Vec::new();
    for s in &states {
        perm_expected.extend(<F as Poseidon>::poseidon(*s).map(|x| x.to_canonical_u64()));
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
    }}
    for (unsigned i = 0; i < {ns}; i++) {{
        u64 s[12]; for (int k = 0; k < 12; k++) s[k] = STATES[12*i+k];
        psn_permute(s);
        for (int k = 0; k < 12; k++) if (s[k] != PERM[12*i+k]) {{ printf("permutation %u lane %d\n", i, k); bad++; }}
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
        nl = lens.len()
    );
    let dir = std::env::temp_dir().join(format!("prover-gpu-host-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let c = dir.join("harness.c");
    let exe = dir.join("harness");
    std::fs::write(&c, src).expect("write harness");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let built = Command::new(&cc)
        .args(["-O2", "-std=c11", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(&c)
        .output()
        .expect("a host C compiler (cc)");
    assert!(
        built.status.success(),
        "compiling the CUDA headers on the host failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let run = Command::new(&exe).output().expect("run harness");
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "host arithmetic differs from plonky2:\n{out}");
    assert!(out.contains("0 mismatches"));
    std::fs::remove_dir_all(&dir).ok();
}

/// Enough of CUDA's built-ins for a host C++ compiler to check the device sources' syntax and
/// types: NVRTC compiles C++, which the host C build of the same headers does not exercise.
const CUDA_STUBS: &str = r#"
#define __CUDACC_RTC__ 1
#define __device__
#define __global__
#define __forceinline__ inline
struct DimStub { unsigned x, y, z; };
static DimStub blockIdx, blockDim, threadIdx;
static inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    __extension__ typedef unsigned __int128 u128;
    return (unsigned long long)(((u128)a * b) >> 64);
}
static inline unsigned long long __brevll(unsigned long long x) {
    unsigned long long r = 0;
    for (int i = 0; i < 64; i++) r |= ((x >> i) & 1ULL) << (63 - i);
    return r;
}
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
